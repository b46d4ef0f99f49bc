//! The web console in a real headless Chromium (Debian's chromium and chromedriver, W3C
//! WebDriver): an operator signs in with a token, reads the overview, finds a device by its
//! hardware serial, revokes it through the confirmation dialog and sees it revoked, as the API
//! does; an auditor's token shows no buttons that would fail. On SQLite and PostgreSQL.
//!
//! With `DEVID_CONSOLE_SCREENSHOTS=1` the SQLite run writes a screenshot of each page to
//! `docs/console/`.

use std::path::PathBuf;
use std::time::Duration;

use devid_e2e::*;
use serde_json::{json, Value};

fn screenshots() -> Option<PathBuf> {
    (std::env::var("DEVID_CONSOLE_SCREENSHOTS").as_deref() == Ok("1"))
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console"))
}

async fn shot(browser: &Session, dir: &Option<PathBuf>, name: &str) {
    if let Some(dir) = dir {
        browser.screenshot(&dir.join(format!("{name}.png"))).await;
    }
}

async fn sign_in(browser: &Session, url: &str, token: &str) {
    browser.goto(url).await;
    let input = browser.find("#token").await;
    browser.send_keys(&input, token).await;
    browser.click(&browser.find("#signin").await).await;
    browser
        .wait_text("main h1", "the overview", |t| t == "Overview")
        .await;
}

async fn token(service: &Service, role: &str) -> String {
    let (s, v) = service
        .call(
            "POST",
            "/v1/tokens",
            Some(json!({"role": role, "name": format!("console-{role}")})),
        )
        .await;
    assert_eq!(s, 201, "token: {v}");
    v["token"].as_str().expect("token").to_string()
}

/// The API's side of the search the console uses: `q` is a case-sensitive prefix of the
/// ClientID or the serial, paged by the server.
async fn search_api(service: &Service, prefix: &str, first_client_id: &str) {
    let (s, v) = service
        .call("GET", &format!("/v1/devices?q={prefix}&limit=2"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let cursor = v["next_cursor"].as_str().expect("a next page").to_string();
    let (s, v) = service
        .call(
            "GET",
            &format!("/v1/devices?q={prefix}&limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v.get("next_cursor").is_none(), "{v}");
    let lower = prefix.to_lowercase();
    let (_, v) = service
        .call("GET", &format!("/v1/devices?q={lower}"), None)
        .await;
    assert_eq!(v["items"], json!([]), "case-sensitive: {v}");
    let (_, v) = service
        .call(
            "GET",
            &format!("/v1/devices?q={}", &first_client_id[..6]),
            None,
        )
        .await;
    let ids: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["client_id"].as_str())
        .collect();
    assert!(ids.contains(&first_client_id), "by ClientID: {v}");
    for bad in ["q=a%25", "q=", "q=SN&hardware_serial=SN"] {
        let (s, v) = service
            .call("GET", &format!("/v1/devices?{bad}"), None)
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
}

async fn run(backend: &Backend, driver: &Chromedriver, dir: Option<PathBuf>) {
    let service = Service::start_with(backend, &[]).await;
    let url = format!("{}/", service.url());
    let tag = hex_tag();
    let mut devices = Vec::new();
    for i in 1..=3 {
        let serial = format!("CON-{tag}-{i:04}");
        let creds = service.register_device(&serial).await;
        devices.push((serial, creds.client_id.clone()));
    }
    search_api(&service, &format!("CON-{tag}"), &devices[0].1).await;
    let auditor = token(&service, "auditor").await;

    let page = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
        .get(&url)
        .send()
        .await
        .expect("GET /");
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "CSP {csp:?}");

    let browser = Session::new(driver, 1280, 900).await;
    sign_in(&browser, &url, &service.admin_token).await;
    browser
        .wait_text("#who", "the role", |t| t.starts_with("admin token"))
        .await;

    // The counts come from the fleet summary; a server without it says so in that panel only.
    let (status, summary) = service.call("GET", "/v1/fleet/summary", None).await;
    if status == 200 {
        let total = summary["total"].as_u64().expect("total").to_string();
        browser
            .wait_text("[data-count=total] .value", "the device count", |t| {
                t == total
            })
            .await;
    } else {
        assert_eq!(status, 404, "{summary}");
        browser
            .wait_text("#counts .panel-body", "not available", |t| {
                t == "not available"
            })
            .await;
    }
    browser
        .wait_text("#activity .panel-body", "the activity panel loaded", |t| {
            !t.starts_with("Loading")
        })
        .await;
    shot(&browser, &dir, "overview").await;

    // Find the second device by its serial.
    let (serial, client_id) = &devices[1];
    browser
        .click(&browser.find("#nav a[href='#/devices']").await)
        .await;
    let search = browser.find("#search").await;
    browser.send_keys(&search, serial).await;
    browser.click(&browser.find("#search-go").await).await;
    browser
        .wait_text("#device-table .serial", "the serial", |t| t == serial)
        .await;
    assert_eq!(browser.find_all(".device-row").await.len(), 1);
    shot(&browser, &dir, "devices").await;

    browser.click(&browser.find(".device-link").await).await;
    browser
        .wait_text("h1.client-id", "the ClientID", |t| t == client_id)
        .await;
    browser
        .wait_text("#device-status", "active", |t| t == "active")
        .await;
    browser
        .wait_text("#timeline .panel-body", "the timeline panel loaded", |t| {
            !t.starts_with("Loading")
        })
        .await;
    shot(&browser, &dir, "device").await;

    // Escape closes the dialog without a change.
    browser.click(&browser.find("#suspend").await).await;
    browser
        .wait_text("#confirm-title", "the device's name", |t| {
            t.contains(client_id.as_str())
        })
        .await;
    browser.type_into_focus(ESCAPE).await;
    wait_until(
        "Escape closes the dialog",
        Duration::from_secs(10),
        || async {
            browser
                .execute("return document.getElementById('confirm').open")
                .await
                == Value::Bool(false)
        },
    )
    .await;
    assert_eq!(
        browser.text(&browser.find("#device-status").await).await,
        "active"
    );

    // Revoke: the confirmation names the device and needs its ClientID typed.
    browser.click(&browser.find("#revoke").await).await;
    browser
        .wait_text("#confirm-title", "the device's name", |t| {
            t == format!("Revoke device {client_id}?")
        })
        .await;
    let ok = browser.find("#confirm-ok").await;
    let disabled = browser
        .execute("return document.getElementById('confirm-ok').disabled")
        .await;
    assert_eq!(
        disabled,
        Value::Bool(true),
        "disabled until the ClientID is typed"
    );
    browser
        .send_keys(&browser.find("#confirm-input").await, client_id)
        .await;
    shot(&browser, &dir, "revoke-dialog").await;
    browser.click(&ok).await;
    browser
        .wait_text("#device-status", "revoked", |t| t == "revoked")
        .await;
    assert!(browser.find_all("#revoke").await.is_empty());
    let (s, v) = service
        .call("GET", &format!("/v1/devices/{client_id}"), None)
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("revoked")), "{v}");
    assert_eq!(v["revocation_reason"], "keyCompromise", "{v}");
    let (_, v) = service
        .call("GET", &format!("/v1/devices/{}", devices[0].1), None)
        .await;
    assert_eq!(v["status"], "active", "the others are untouched: {v}");

    browser
        .click(&browser.find("#nav a[href='#/findings']").await)
        .await;
    browser
        .wait_text("#findings .panel-body", "the findings panel loaded", |t| {
            !t.starts_with("Loading")
        })
        .await;
    shot(&browser, &dir, "findings").await;

    // An auditor reads the same device page without any button that would fail.
    browser.click(&browser.find("#signout").await).await;
    browser.find("#token").await;
    sign_in(&browser, &url, &auditor).await;
    browser
        .wait_text("#who", "the role", |t| t.starts_with("auditor token"))
        .await;
    let other = &devices[0].1;
    browser.goto(&format!("{url}#/device/{other}")).await;
    browser
        .wait_text("h1.client-id", "the ClientID", |t| t == other)
        .await;
    browser
        .wait_text("#device-status", "active", |t| t == "active")
        .await;
    for button in ["#revoke", "#suspend", "#resume"] {
        assert!(
            browser.find_all(button).await.is_empty(),
            "an auditor sees no {button}"
        );
    }

    // Narrow screens: the same page, laid out for a phone.
    browser.set_window_size(400, 860).await;
    browser.goto(&format!("{url}#/devices")).await;
    browser
        .wait_text("#devices .panel-body", "the device list", |t| {
            t.contains(serial)
        })
        .await;
    shot(&browser, &dir, "devices-narrow").await;
}

fn hex_tag() -> String {
    let mut b = [0u8; 3];
    use ring::rand::SecureRandom as _;
    ring::rand::SystemRandom::new().fill(&mut b).expect("rng");
    hex::encode_upper(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_and_revokes_a_device_in_the_console_and_an_auditor_sees_no_buttons() {
    let driver = Chromedriver::start();
    for backend in backends() {
        eprintln!("backend {}", backend.name());
        let dir = (backend == Backend::Sqlite).then(screenshots).flatten();
        run(&backend, &driver, dir).await;
    }
}
