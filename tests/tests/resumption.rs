//! DEVID-1 resumption through Mosquitto: tickets from full handshakes, symmetric-only
//! reconnects, and the refusals.

use std::time::Duration;

use devid_e2e::devid_device::mqtt::ReasonCode;
use devid_e2e::*;

const NAME: &str = "mqtt.test.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resume_and_are_refused_after_revocation_or_under_another_key() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity.clone());
    settings.ticket_keys = Some(ticket_key_file(1));
    let broker = Broker::start(settings);
    // A second broker of another "cluster": its own ticket key.
    let mut other_settings = BrokerSettings::new(&service, identity);
    other_settings.ticket_keys = Some(ticket_key_file(1));
    let other = Broker::start(other_settings);
    let root = service.root_der();
    let dev = service.register_device("hw-resume").await;
    let victim = service.register_device("hw-resume-victim").await;

    let full = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("full handshake");
    let ticket = full
        .session
        .as_ref()
        .and_then(|s| s.ticket.clone())
        .expect("a ticket in ServerFinish");
    full.client.disconnect().await.expect("disconnect");

    let resumed = resume(&broker.addr(), &dev, &root, None, &ticket)
        .await
        .expect("resumption admitted");
    let session = resumed.session.as_ref().expect("session");
    assert!(session.resumed);
    let r = resumed
        .publish(&format!("devices/{}/r", dev.client_id), b"1")
        .await;
    assert!(r.is_success());
    assert!(broker.log().contains("via DEVID-1 resumption"));
    resumed.client.disconnect().await.expect("disconnect");

    // Another cluster key: not authentic there.
    let r = resume(&other.addr(), &dev, &root, None, &ticket).await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);
    // Another ClientID with the same ticket.
    let r = resume(
        &broker.addr(),
        &dev,
        &root,
        Some(&victim.client_id),
        &ticket,
    )
    .await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);
    // A flipped bit in the ticket.
    let mut bad = ticket.clone();
    let n = bad.ticket.len();
    bad.ticket[n / 2] ^= 1;
    let r = resume(&broker.addr(), &dev, &root, None, &bad).await;
    assert_eq!(refused_with(r), ReasonCode::NOT_AUTHORIZED);

    // A ticket of a device revoked after it was issued.
    let v = connect(&broker.addr(), &victim, &root, None, Tamper::None)
        .await
        .expect("victim full handshake");
    let vticket = v
        .session
        .as_ref()
        .and_then(|s| s.ticket.clone())
        .expect("ticket");
    v.client.disconnect().await.expect("disconnect");
    service.revoke(&victim.client_id).await;
    // The revocation reaches the broker with its next feed batch.
    wait_until(
        "revoked ticket refused",
        Duration::from_secs(10),
        || async { ticket_refused(&broker, &victim, &root, &vticket).await },
    )
    .await;
    assert!(broker.log().contains("device revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ticket_keys_no_ticket_is_issued() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let broker = Broker::start(BrokerSettings::new(&service, identity));
    let root = service.root_der();
    let dev = service.register_device("hw-noticket").await;
    let d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("admitted");
    assert!(d.session.as_ref().expect("session").ticket.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_ticket_is_refused() {
    let service = Service::start().await;
    let identity = service.enroll_broker(NAME).await;
    let mut settings = BrokerSettings::new(&service, identity);
    settings.ticket_keys = Some(ticket_key_file(7));
    settings.extra.push("plugin_opt_ticket_lifetime 1".into());
    let broker = Broker::start(settings);
    let root = service.root_der();
    let dev = service.register_device("hw-expire").await;
    let d = connect(&broker.addr(), &dev, &root, None, Tamper::None)
        .await
        .expect("full handshake");
    let ticket = d
        .session
        .as_ref()
        .and_then(|s| s.ticket.clone())
        .expect("ticket");
    assert_eq!(ticket.lifetime, 1);
    d.client.disconnect().await.expect("disconnect");
    // The device offers a ticket only while its own clock says it is unexpired; one whose clock
    // lags still does (here: its record of receiving the ticket moved an hour on). The broker
    // judges by the expiry sealed in the ticket.
    let mut lagging = ticket.clone();
    lagging.received_at += 3600;
    // Lifetimes count whole seconds: refused within about 1 s; the log below says why.
    wait_until(
        "expired ticket refused",
        Duration::from_secs(10),
        || async { ticket_refused(&broker, &dev, &root, &lagging).await },
    )
    .await;
    assert!(broker.log().contains("expired"), "{}", broker.log());
}

/// Whether the broker refuses this ticket (NOT_AUTHORIZED); a resumption it still admits is
/// closed again.
async fn ticket_refused(
    broker: &Broker,
    dev: &DeviceCreds,
    root: &[u8],
    ticket: &devid_core::protocol::ResumptionTicket,
) -> bool {
    match resume(&broker.addr(), dev, root, None, ticket).await {
        Ok(d) => {
            d.client.disconnect().await.expect("disconnect");
            false
        }
        Err(e) => refused_with(Err(e)) == ReasonCode::NOT_AUTHORIZED,
    }
}
