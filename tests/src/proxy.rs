//! The service as a broker's plugin sees it, with two routes played by the test: every request
//! goes to the real devid-server (feed, SSE stream, statuses), except the sensor keys of a
//! gateway (`GET /v1/devices/{gateway}/sensors/keys`, answered from the test's table, with each
//! sensor's `seq_floor` the highest seq the brokers reported) and the event batches
//! (`POST /v1/events`, their bodies recorded and answered 202). The plugin's side of DEVID-S1
//! and of fleet health (connection events, counters, heartbeat) is tested through it apart from
//! the service's.
//!
//! A minimal HTTP/1.1 server: one request per connection (`Connection: close`), bodies by
//! `Content-Length`; forwarded answers are streamed back until the upstream ends (the SSE
//! stream stays open).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One sensor as the keys route gives it.
#[derive(Clone, Debug)]
pub struct SensorEntry {
    pub client_id: String,
    pub status: String,
    pub k_mac: [u8; 32],
    pub k_enc: [u8; 32],
    pub publish: Vec<String>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Vec<SensorEntry>>,
    batches: Vec<Value>,
}

/// The proxy; stops when dropped.
pub struct ServiceProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on a free port in front of `upstream` (the real service's base URL).
    pub async fn start(upstream: String) -> ServiceProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (st, http, upstream) = (st.clone(), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, &st, &http, &upstream).await;
                });
            }
        });
        ServiceProxy { port, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What `GET /v1/devices/{gateway}/sensors/keys` answers from now on.
    pub fn set_sensors(&self, gateway: &str, sensors: Vec<SensorEntry>) {
        lock(&self.state).keys.insert(gateway.to_string(), sensors);
    }

    /// Forgets the batches received so far: every `seq_floor` is 0 again (as for a service
    /// that never heard of the sensor), so a broker's window comes from its own counters.
    pub fn forget_reports(&self) {
        lock(&self.state).batches.clear();
    }

    /// Every event batch (`POST /v1/events` body) received so far, in order.
    pub fn batches(&self) -> Vec<Value> {
        lock(&self.state).batches.clone()
    }

    /// The `sensors` parts of every event batch received so far, in order.
    pub fn sensor_reports(&self) -> Vec<Value> {
        lock(&self.state)
            .batches
            .iter()
            .filter_map(|b| b.get("sensors").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect()
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn b64(k: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k)
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn respond(sock: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}

async fn serve(
    mut sock: TcpStream,
    state: &Mutex<State>,
    http: &reqwest::Client,
    upstream: &str,
) -> std::io::Result<()> {
    let Some(req) = read_request(&mut sock).await else {
        return Ok(());
    };
    if let Some(gateway) = req
        .path
        .strip_prefix("/v1/devices/")
        .and_then(|p| p.strip_suffix("/sensors/keys"))
    {
        let answer = {
            let st = lock(state);
            // seq_floor: the highest seq any broker reported for the sensor.
            let mut floor: HashMap<&str, u64> = HashMap::new();
            for r in st
                .batches
                .iter()
                .filter_map(|b| b.get("sensors").and_then(Value::as_array))
                .flatten()
            {
                let (Some(id), Some(h)) = (r["client_id"].as_str(), r["highest_seq"].as_u64())
                else {
                    continue;
                };
                let e = floor.entry(id).or_default();
                *e = (*e).max(h);
            }
            let sensors: Vec<Value> = st
                .keys
                .get(gateway)
                .map(|v| {
                    v.iter()
                        .map(|s| {
                            json!({"client_id": s.client_id, "status": s.status,
                                   "k_mac": b64(&s.k_mac), "k_enc": b64(&s.k_enc),
                                   "publish": s.publish,
                                   "seq_floor": floor.get(s.client_id.as_str()).copied().unwrap_or(0)})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"gateway": gateway, "sensors": sensors})
        };
        return respond(&mut sock, 200, answer.to_string().as_bytes()).await;
    }
    if req.method == "POST" && req.path == "/v1/events" {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => {
                lock(state).batches.push(v);
                return respond(&mut sock, 202, b"").await;
            }
            Err(_) => return respond(&mut sock, 400, b"{}").await,
        }
    }
    // Everything else: the real service, streamed back.
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut out = http.request(method, format!("{upstream}{}", req.path));
    for (k, v) in &req.headers {
        if matches!(
            k.as_str(),
            "authorization" | "accept" | "last-event-id" | "if-none-match" | "content-type"
        ) {
            out = out.header(k.as_str(), v.as_str());
        }
    }
    if !req.body.is_empty() {
        out = out.body(req.body);
    }
    let Ok(mut resp) = out.send().await else {
        return respond(&mut sock, 502, b"{}").await;
    };
    let mut head = format!("HTTP/1.1 {} X\r\n", resp.status().as_u16());
    for name in ["content-type", "etag"] {
        if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await?;
    while let Ok(Some(chunk)) = resp.chunk().await {
        sock.write_all(&chunk).await?;
    }
    sock.shutdown().await
}
