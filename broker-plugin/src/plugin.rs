//! The plugin instance behind Mosquitto's `userdata` pointer: what `mosquitto_plugin_init`
//! builds from the options (configuration, DEVID-1 server, cached revocation state, service
//! thread, engine), what TICK drains from the service thread, and how cleanup stops it. `ffi`
//! hands this the broker's data and carries out its answers at the broker.

#![deny(unsafe_code)]

use std::cell::RefCell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::ca_set::CaSet;
use crate::engine::{Engine, Expired, RenewReply, ServerSide};
use crate::ffi::host::mosquitto_plugin_id_t;
use crate::ffi::log;
use crate::service::{FromService, LogLevel, Shared};
use crate::{config, devid1, service, state};

/// Everything the plugin holds, behind the `userdata` pointer. Only the broker thread touches
/// it (the service thread has its own `Arc`s).
pub(crate) struct Plugin {
    /// The broker's identifier for this plugin, for (un)registering callbacks.
    pub(crate) id: *mut mosquitto_plugin_id_t,
    pub(crate) engine: RefCell<Engine<devid1::Devid1Server>>,
    service: RefCell<service::Handle>,
    /// Dropped last, once everything else is gone.
    _instance: Instance,
}

/// One instance per process: a second `mosquitto_plugin_init` means the plugin is configured
/// per listener (`per_listener_settings true`) or listed twice.
static LOADED: AtomicBool = AtomicBool::new(false);

/// The claim on [`LOADED`], given back on drop (a failed init, or the plugin's end).
struct Instance(());

impl Instance {
    fn claim() -> Result<Instance, InitError> {
        if LOADED.swap(true, Ordering::SeqCst) {
            return Err(InitError::LoadedTwice);
        }
        Ok(Instance(()))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        LOADED.store(false, Ordering::SeqCst);
    }
}

/// Why `mosquitto_plugin_init` refuses to load the plugin (logged as a configuration error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("the plugin is loaded twice: set `per_listener_settings false` and list it once")]
    LoadedTwice,
    #[error("an option key or value is not UTF-8")]
    OptionNotUtf8,
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Start(#[from] service::StartError),
    #[error("cannot register callback for event {event}: error {rc}")]
    Register { event: c_int, rc: c_int },
}

/// What a TICK asks of the broker, once the engine is no longer borrowed.
pub(crate) struct Tick {
    /// ClientIDs of authenticated connections to kick.
    pub(crate) kicks: Vec<String>,
    /// Connections whose handshake did not finish within `auth_timeout`.
    pub(crate) expired: Vec<Expired>,
    /// Renewal replies to publish.
    pub(crate) replies: Vec<RenewReply>,
}

impl Plugin {
    /// Builds the plugin from its `plugin_opt_*` pairs and starts the service thread.
    pub(crate) fn start(
        id: *mut mosquitto_plugin_id_t,
        opts: &[(String, String)],
    ) -> Result<Plugin, InitError> {
        let instance = Instance::claim()?;
        let mut config = config::Config::from_options(opts)?;
        // Every event and heartbeat names the broker: its option, else the host name.
        if config.broker_name.is_none() {
            config.broker_name = Some(crate::ffi::host_name());
        }
        let mut server = devid1::Devid1Server::new(&config)?;
        // The CA set of the service's last answer, until the service answers again.
        match CaSet::load(&config.state_dir, &config.trust_anchor_der) {
            Ok(Some(set)) => server.use_ca_set(set),
            Ok(None) => {}
            Err(e) => log(
                LogLevel::Warning,
                &format!("devid: persisted CA set unusable ({e}); using the broker's chain until the service answers"),
            ),
        }
        // A cache that cannot be read is not trusted at all: start empty and forget the contact
        // time, so every device is refused until the feed has caught up from the beginning.
        let (cached, contact) = match state::RevocationState::load(&config.state_dir) {
            Ok(cached) => (cached, state::load_contact(&config.state_dir)),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("devid: revocation cache unusable ({e}); starting empty and refusing every device until the service is reached"),
                );
                (None, None)
            }
        };
        log(
            LogLevel::Info,
            &format!(
                "devid: plugin starting; service {}, cached revocation state: {}",
                config.service_url,
                match &cached {
                    Some(s) => format!(
                        "seq {}, {} serials, {} devices",
                        s.seq,
                        s.serials.len(),
                        s.devices.len()
                    ),
                    None => "none".into(),
                }
            ),
        );
        // Unreadable counters: start from the service's seq_floor alone (the highest any broker
        // reported), which leaves open what this broker accepted after its last report.
        let counters = state::load_sensor_counters(&config.state_dir).unwrap_or_else(|e| {
            log(
                LogLevel::Error,
                &format!("devid: sensor counters unusable ({e}); sensors' windows start at the service's seq_floor"),
            );
            Default::default()
        });
        let shared = Arc::new(Mutex::new(Shared {
            revocations: cached.unwrap_or_default(),
            last_contact: contact,
            connected: 0,
        }));
        let handle = service::start(config.clone(), shared.clone(), counters.clone())?;
        let engine = Engine::new(config, server, shared, Some(handle.to_service.clone()))
            .with_sensor_counters(counters.into_iter().collect());
        Ok(Plugin {
            id,
            engine: RefCell::new(engine),
            service: RefCell::new(handle),
            _instance: instance,
        })
    }

    /// Writes the engine's pending lines to the broker's log (nothing while it is borrowed).
    pub(crate) fn flush_logs(&self) {
        let logs = match self.engine.try_borrow_mut() {
            Ok(mut e) => e.take_logs(),
            Err(_) => return,
        };
        for (level, line) in logs {
            log(level, &line);
        }
    }

    /// Applies what the service thread sent since the last TICK; None when re-entered (the
    /// service or the engine is borrowed).
    pub(crate) fn tick(&self) -> Option<Tick> {
        let inbox: Vec<FromService> = match self.service.try_borrow() {
            Ok(s) => s.from_service.try_iter().collect(),
            Err(_) => return None,
        };
        let tick = match self.engine.try_borrow_mut() {
            Ok(mut e) => {
                let kicks = e.tick(inbox);
                Tick {
                    kicks,
                    expired: e.expired_handshakes(),
                    replies: e.take_replies(),
                }
            }
            Err(_) => return None,
        };
        self.flush_logs();
        Some(tick)
    }

    /// Stops the service thread and logs what it said while stopping; the instance is given
    /// back when `self` is dropped.
    pub(crate) fn stop(self) {
        // The sensor counts of the last second, to be reported and persisted before the
        // service thread ends.
        if let Ok(mut e) = self.engine.try_borrow_mut() {
            e.report_sensors(true);
            e.report_counters(true);
        }
        self.service.borrow_mut().stop();
        // Lines the service thread produced while stopping.
        let late: Vec<FromService> = self.service.borrow().from_service.try_iter().collect();
        for m in late {
            if let FromService::Log(level, line) = m {
                log(level, &line);
            }
        }
    }
}
