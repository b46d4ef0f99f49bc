//! The plugin's behaviour around the service: fetched policy and allow-list, events, cached
//! state across a restart with the service down, fail-closed staleness, configuration traps,
//! the mutual-TLS path and client-sent `devid-*` properties.

use std::time::Duration;

use devid_e2e::devid_device::mqtt::{QoS, ReasonCode};
use devid_e2e::devid_device::{Event, OutgoingMessage};
use devid_e2e::*;
use serde_json::json;

const NAME: &str = "mqtt.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_policy_and_allow_list_apply_and_events_reach_the_service() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-pol").await;
    let cid = dev.client_id.clone();

    // A custom policy for this device.
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{cid}/policy"),
            Some(json!({"topics": {"publish": ["fleet/%c/up"], "subscribe": ["fleet/%c/down"]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    // The fetched policy replaces the default once it arrives (asynchronously).
    let mut applied = false;
    for _ in 0..40 {
        if d.publish(&format!("fleet/{cid}/up"), b"1")
            .await
            .is_success()
        {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "custom policy not applied within 2 s");
    assert_eq!(
        d.publish(&format!("devices/{cid}/x"), b"1").await,
        ReasonCode::NOT_AUTHORIZED,
        "default policy must no longer apply"
    );
    assert_eq!(
        d.subscribe(&format!("fleet/{cid}/down")).await,
        ReasonCode::GRANTED_QOS_1
    );
    assert_eq!(d.subscribe("broadcast/#").await, ReasonCode::NOT_AUTHORIZED);

    // An allow-list that excludes 127.0.0.1: the connected device is dropped and refused.
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{cid}/allowlist"),
            Some(json!({"cidrs": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The allow-list arrives with the next status fetch: reconnecting triggers one (the plugin
    // fetches at most once a second per device).
    d.client.disconnect().await.expect("disconnect");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = connect(&broker.addr(), &dev, &root, None, Tamper::None).await;
    let mut refused = first.is_err();
    if let Ok(mut again) = first {
        // Admitted on the cached (old) status, then kicked when the fresh one lands.
        match again.event(Duration::from_secs(7)).await {
            Some(Event::Disconnected { reason, .. }) => {
                assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
            }
            other => panic!("not kicked for its allow-list: {other:?}"),
        }
        let r = connect(&broker.addr(), &dev, &root, None, Tamper::None).await;
        refused = refused_with(r) == ReasonCode::NOT_AUTHORIZED;
    }
    assert!(refused);
    assert!(broker.log().contains("not in the device's allow-list"));

    // Events: the service learned last_seen / last_address from the broker's batches.
    let mut seen = false;
    for _ in 0..60 {
        let (s, v) = service
            .call("GET", &format!("/v1/devices/{cid}"), None)
            .await;
        assert_eq!(s, 200);
        if !v["last_seen"].is_null() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "no connect event reached the service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_service_down_admits_from_cache_then_fails_closed() {
    let mut service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.max_staleness = 4;
    let mut broker = Broker::start(settings);
    let root = service.root_der();
    let good = service.register_device("hw-good").await;
    let bad = service.register_device("hw-bad").await;
    service.revoke(&bad.client_id).await;
    // Wait until the broker has seen the revocation and persisted it.
    let state_file = broker.state_dir().join("state.json");
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(
            &state_file
        )
        .is_ok_and(|s| s.contains(&bad.client_id)))
        .await,
        "revocation never persisted"
    );
    connect(&broker.addr(), &good, &root, None, Tamper::None)
        .await
        .expect("good device before the outage")
        .client
        .disconnect()
        .await
        .expect("disconnect");

    // Service down, broker restarted: the cache still knows the revocation and admits the
    // good device while the last contact is fresh.
    service.stop();
    broker.restart();
    let d = connect(&broker.addr(), &good, &root, None, Tamper::None)
        .await
        .expect("good device admitted from the cached state");
    d.client.disconnect().await.expect("disconnect");
    let r = connect(&broker.addr(), &bad, &root, None, Tamper::None).await;
    assert_eq!(
        refused_with(r),
        ReasonCode::NOT_AUTHORIZED,
        "cached revocation forgotten"
    );

    // After max_staleness (4 s) without contact: everyone refused, loudly.
    wait_until(
        "stale state must fail closed",
        Duration::from_secs(15),
        || async {
            match connect(&broker.addr(), &good, &root, None, Tamper::None).await {
                Ok(d) => {
                    d.client.disconnect().await.expect("disconnect");
                    false
                }
                Err(e) => refused_with(Err(e)) == ReasonCode::NOT_AUTHORIZED,
            }
        },
    )
    .await;
    assert!(broker.log().contains("FAILING CLOSED"));

    // Service back: the feed catches up and devices are admitted again.
    service.restart();
    let mut back = false;
    for _ in 0..60 {
        if connect(&broker.addr(), &good, &root, None, Tamper::None)
            .await
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "not admitted after the service came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_stop_the_broker_with_a_clear_line() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    type Edit = Box<dyn Fn(&mut BrokerSettings)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "plugin_opt_max_staleness",
            Box::new(|s| s.max_staleness = 0),
        ),
        (
            "unknown option plugin_opt_sevice_url",
            Box::new(|s| s.extra.push("plugin_opt_sevice_url http://x".into())),
        ),
        (
            "plugin_opt_broker_key",
            Box::new(|s| s.identity.key_pem = "not a key".into()),
        ),
        (
            "plugin_opt_trust_anchor",
            Box::new(|s| s.identity.root_pem = String::new()),
        ),
        (
            "plugin_opt_auth_timeout",
            Box::new(|s| s.extra.push("plugin_opt_auth_timeout ten".into())),
        ),
    ];
    for (expect, edit) in cases {
        let mut settings = BrokerSettings::new(&service, identity.clone());
        edit(&mut settings);
        let mut b = Broker::prepare(settings);
        let log = b.launch().expect_err(expect);
        assert!(log.contains(expect), "{expect}: {log}");
        assert!(log.contains("Refusing to start"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_listener_settings_true_refuses_every_device() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.per_listener_settings = true;
    let mut broker = Broker::start(settings);
    let root = service.root_der();
    let dev = service.register_device("hw-pls").await;
    // TICK never fires with per_listener_settings true; after the grace period (3 s) the plugin
    // knows it cannot apply revocations and fails closed.
    wait_until(
        "refused for want of TICK",
        Duration::from_secs(10),
        || async {
            match connect(&broker.addr(), &dev, &root, None, Tamper::None).await {
                Ok(d) => {
                    d.client.disconnect().await.expect("disconnect");
                    false
                }
                Err(e) => refused_with(Err(e)) == ReasonCode::NOT_AUTHORIZED,
            }
        },
    )
    .await;
    assert!(
        broker.log().contains("per_listener_settings false"),
        "{}",
        broker.log()
    );
    assert!(broker.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_devid_get_nothing() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    // No auth method on a plain listener: refused (no certificate to check).
    let mut conn =
        devid_e2e::devid_device::open(&broker.addr(), &devid_e2e::devid_device::Transport::Tcp)
            .await
            .expect("tcp");
    let opts = devid_e2e::devid_device::ConnectOptions::new("anon1");
    let r = devid_e2e::devid_device::handshake::<devid_e2e::devid_device::NoAuth>(
        &mut conn, &opts, None,
    )
    .await;
    let code = r
        .expect_err("anonymous admitted")
        .reason_code()
        .expect("CONNACK refusal");
    assert!(!code.is_success(), "{code:?}");
    assert!(broker
        .log()
        .contains("no DEVID-1 authentication and no client certificate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_devid_properties_never_reach_subscribers() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-props").await;
    let mut d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    let topic = format!("devices/{}/data", dev.client_id);
    assert_eq!(d.subscribe(&topic).await, ReasonCode::GRANTED_QOS_1);
    let mut msg = OutgoingMessage::new(topic.clone(), b"payload".to_vec(), QoS::AtLeastOnce);
    msg.user_properties = vec![
        ("devid-verified".into(), "someone-else".into()),
        ("keep".into(), "me".into()),
        ("devid-anything".into(), "1".into()),
        ("also".into(), "kept".into()),
    ];
    let ack = d
        .client
        .publish(msg)
        .await
        .expect("publish")
        .expect("puback");
    assert!(ack.reason.is_success());
    match d.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => {
            assert_eq!(
                m.user_properties,
                vec![
                    ("keep".to_string(), "me".to_string()),
                    ("also".to_string(), "kept".to_string())
                ]
            );
            assert_eq!(m.payload, b"payload");
        }
        other => panic!("message not delivered: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_devices_are_checked_with_the_same_rules() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.tls = true;
    let broker = Broker::start(settings);
    let root = service.root_der();
    let tls_addr = format!("127.0.0.1:{}", broker.tls_port);
    let good = service.register_device("hw-tls").await;
    let other = service.register_device("hw-tls2").await;

    let d = connect_tls(&tls_addr, NAME, &good, &root, None)
        .await
        .expect("mTLS device admitted");
    let mut d = d;
    let own = format!("devices/{}/t", good.client_id);
    assert_eq!(d.subscribe(&own).await, ReasonCode::GRANTED_QOS_1);
    let r = d.publish(&own, b"1").await;
    assert!(r.is_success(), "{r:?}");
    // Messages of mutual-TLS devices are marked verified (the TLS channel authenticates them).
    match d.event(Duration::from_secs(5)).await {
        Some(Event::Message(m)) => assert_eq!(
            m.user_properties,
            vec![("devid-verified".to_string(), good.client_id.clone())]
        ),
        other => panic!("message not delivered: {other:?}"),
    }
    assert_eq!(
        d.publish(&format!("devices/{}/t", other.client_id), b"1")
            .await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert!(broker.log().contains("via mutual TLS"));

    // Wrong ClientID for the certificate.
    let r = connect_tls(&tls_addr, NAME, &good, &root, Some(&other.client_id)).await;
    assert!(!refused_with(r).is_success());

    // Revoked: kicked and refused on this path too.
    service.revoke(&good.client_id).await;
    match d.event(Duration::from_secs(1)).await {
        Some(Event::Disconnected { .. }) | Some(Event::Closed(_)) => {}
        other => panic!("mTLS device not dropped on revocation: {other:?}"),
    }
    let r = connect_tls(&tls_addr, NAME, &good, &root, None).await;
    assert!(!refused_with(r).is_success());
    // The other device still connects.
    connect_tls(&tls_addr, NAME, &other, &root, None)
        .await
        .expect("other mTLS device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_and_no_service_refuses_everyone() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    // Nothing listens there: the plugin never reaches a service and has no cached state.
    settings.service_url = format!("http://127.0.0.1:{}", free_port());
    let broker = Broker::start(settings);
    let dev = service.register_device("hw-nocache").await;
    let r = connect(
        &broker.addr(),
        &dev,
        &service.root_der(),
        None,
        Tamper::None,
    )
    .await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);
    assert!(broker.log().contains("FAILING CLOSED"), "{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_fails_closed_until_the_feed_catches_up() {
    let mut service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-corrupt").await;
    connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    // Corrupt cache, service down: the fresh contact time must not be trusted.
    service.stop();
    broker.stop();
    std::fs::write(broker.state_dir().join("state.json"), b"{not json").expect("corrupt");
    broker.restart();
    let r = connect(&broker.addr(), &dev, &root, None, Tamper::None).await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);
    assert!(
        broker.log().contains("revocation cache unusable"),
        "{}",
        broker.log()
    );
    // Service back: caught up from the beginning, admitted again.
    service.restart();
    let mut ok = false;
    for _ in 0..60 {
        if connect(&broker.addr(), &dev, &root, None, Tamper::None)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "not admitted after the catch-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changes_reach_live_connections_through_the_feed() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-live-settings").await;
    let cid = dev.client_id.clone();
    let d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    assert!(d
        .publish(&format!("devices/{cid}/x"), b"1")
        .await
        .is_success());
    // Let the status fetch of the connect land first, so that what follows is the feed's doing.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new topic policy: the next publish outside it is refused on the same connection.
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{cid}/policy"),
            Some(json!({"topics": {"publish": ["fleet/%c/up"], "subscribe": ["fleet/%c/down"]}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let refused = {
        let mut refused = false;
        for _ in 0..40 {
            if d.publish(&format!("devices/{cid}/x"), b"1").await == ReasonCode::NOT_AUTHORIZED {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refused
    };
    assert!(refused, "the old policy still applies 2 s after the change");
    assert!(d
        .publish(&format!("fleet/{cid}/up"), b"1")
        .await
        .is_success());

    // A tighter allow-list that excludes 127.0.0.1: the live connection is dropped.
    let (s, v) = service
        .call(
            "PUT",
            &format!("/v1/devices/{cid}/allowlist"),
            Some(json!({"cidrs": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut d = d;
    match d.event(Duration::from_secs(2)).await {
        Some(Event::Disconnected { reason, .. }) => {
            assert_eq!(reason, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("not kicked within 2 s of the allow-list change: {other:?}"),
    }
    assert!(broker.log().contains("not in the device's allow-list"));
    let r = connect(&broker.addr(), &dev, &root, None, Tamper::None).await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);
}
