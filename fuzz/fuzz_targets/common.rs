//! Shared setup: the configs of the DEVID-1 test vector (certificates, keys, time).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use devid_core::protocol::*;
use rustls_pki_types::UnixTime;
use serde_json::Value;

const VECTOR: &str = include_str!("../../core/tests/vectors/devid1.json");

pub struct Setup {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
    pub client_id: String,
    pub now: UnixTime,
    /// A ticket the server accepts, with its resumption secret.
    pub ticket: ResumptionTicket,
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn vector() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| serde_json::from_str(VECTOR).unwrap())
}

/// The vector's ticket key (id 7), so the vector's tickets open.
pub fn ticket_keys() -> TicketKeys {
    let i = &vector()["inputs"];
    let key: [u8; 32] = h(&i["ticket_key"]).try_into().unwrap();
    TicketKeys::new(TicketKey::new(i["ticket_key_id"].as_u64().unwrap() as u32, &key))
}

/// The vector's full-handshake k_c2s, so the vector's MAC and seal verify.
pub fn k_c2s() -> [u8; 32] {
    h(&vector()["derived"]["full"]["keys"]["k_c2s"]).try_into().unwrap()
}

pub fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let i = &vector()["inputs"];
        let root = h(&i["root_der"]);
        let chain = |k: &str| i[k].as_array().unwrap().iter().map(h).collect::<Vec<_>>();
        let rng = ring::rand::SystemRandom::new();
        let dk = Arc::new(EcdsaSigner::from_pkcs8_der(&h(&i["device_key_pkcs8"]), &rng).unwrap());
        let bk = Arc::new(EcdsaSigner::from_pkcs8_der(&h(&i["broker_key_pkcs8"]), &rng).unwrap());
        let client = Arc::new(
            ClientConfig::new(&root, chain("device_chain_der"), dk)
                .unwrap()
                .with_broker_name(i["broker_name"].as_str().unwrap())
                .unwrap(),
        );
        let server = Arc::new(
            ServerConfig::new(&root, chain("broker_chain_der"), bk)
                .unwrap()
                .with_ticket_keys(ticket_keys(), 86_400)
                .with_cert_cache(Arc::new(MemoryCertCache::new(16))),
        );
        let now = UnixTime::since_unix_epoch(Duration::from_secs(i["now"].as_u64().unwrap()));
        let client_id = client.client_id().to_string();
        // One real handshake for a ticket.
        let (d, ch) = ClientHandshake::start(&client, &rng).unwrap();
        let p = ServerHandshake::read_client_hello(&server, &client_id, &ch, now).unwrap();
        let (b, sh) = p.accept(&rng).unwrap();
        let (d, cf) = d.handle(&sh, now, &rng).unwrap();
        let (_, sf) = b.handle(&cf, now, &rng).unwrap();
        let session = d.handle(&sf, now).unwrap();
        Setup {
            client,
            server,
            client_id,
            now,
            ticket: session.ticket.unwrap(),
        }
    })
}
