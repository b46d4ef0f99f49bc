//! A PKCS#11 token that holds the CA keys: the module loaded once per process, the token's
//! slot found by label or RFC 7512 URI, and sessions logged in with the PIN.
//!
//! A token that stops answering (unplugged, restarted, its connection lost) invalidates every
//! session, and some modules keep failing until they are initialized again. [`Token::reset`]
//! does that (at most once a second): it waits for every call in flight (each holds
//! [`Token::calls`]), finalizes and re-initializes the module, finds the token's slot again,
//! and bumps [`Token::generation`], so that sessions opened before are forgotten, never
//! closed (their handle numbers may belong to new sessions by then).
//!
//! `cryptoki` is an interface to the token, not a second crypto stack: the token makes the
//! keys and the signatures, ring checks every signature and does all other cryptography.
//! The keys themselves are [`TokenKey`](super::token_key::TokenKey)s.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::error::CaError;

/// Where the CA keys live in a token: the module, which token, and the user PIN.
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (a shared library such as `libsofthsm2.so`).
    pub module: PathBuf,
    /// The token: its label, or an RFC 7512 `pkcs11:` URI naming it (`token=`, `serial=`,
    /// `manufacturer=`, `model=`).
    pub token: String,
    /// The user PIN. Never printed: `Debug` leaves it out.
    pub pin: AuthPin,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Least time between two module re-initializations.
const RESET_INTERVAL: Duration = Duration::from_secs(1);

/// An open token: the module, the slot it sits in, and the PIN to log new sessions in.
pub(super) struct Token {
    module: Pkcs11,
    config: TokenConfig,
    selector: TokenSelector,
    slot: Mutex<Slot>,
    /// The token's label, for log lines and key references.
    pub label: String,
    calls: RwLock<()>,
    generation: AtomicU64,
    last_reset: Mutex<Option<Instant>>,
}

impl Token {
    /// Loads the module, finds the token and logs in once, so that a wrong PIN or a missing
    /// token stops the start with a clear message.
    pub fn open(config: &TokenConfig) -> Result<Arc<Token>, CaError> {
        let module = load_module(&config.module)?;
        let selector = TokenSelector::parse(&config.token)?;
        let (slot, label) = find_slot(&module, &selector, config)?;
        let token = Token {
            module,
            config: TokenConfig {
                module: config.module.clone(),
                token: config.token.clone(),
                pin: config.pin.clone(),
            },
            selector,
            slot: Mutex::new(slot),
            label,
            calls: RwLock::default(),
            generation: AtomicU64::new(0),
            last_reset: Mutex::default(),
        };
        drop(token.session(false)?);
        Ok(Arc::new(token))
    }

    /// Held around every call on a pooled session, so [`Token::reset`] never runs under one.
    pub fn calls(&self) -> RwLockReadGuard<'_, ()> {
        self.calls.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumped by every [`Token::reset`]: sessions of an older generation are gone.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Finalizes and re-initializes the module and finds the token again (see the module
    /// docs). Skipped (false) within a second of the last reset.
    pub fn reset(&self) -> Result<bool, CaError> {
        let _calls = self.calls.write().unwrap_or_else(|p| p.into_inner());
        {
            let mut last = self.last_reset.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESET_INTERVAL) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(token = %self.label, "re-initializing the PKCS#11 module");
        // Whatever finalizing says, the sessions are gone; initializing again is what counts.
        let _ = self.module.clone().finalize();
        self.generation.fetch_add(1, Ordering::SeqCst);
        initialize(&self.module, &self.config.module)?;
        let (slot, _) = find_slot(&self.module, &self.selector, &self.config)?;
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
        Ok(true)
    }

    /// A new session, logged in, closed when dropped (for start-up work).
    pub fn session(&self, rw: bool) -> Result<Session, CaError> {
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let session = if rw {
            self.module.open_rw_session(slot)
        } else {
            self.module.open_ro_session(slot)
        }
        .map_err(p11("open a session"))?;
        self.login(session)
    }

    /// A new read-only session, logged in, that dropping does not close: for a pool, whose
    /// owner closes it while its generation is current. Call under [`Token::calls`].
    pub fn pool_session(&self) -> Result<Session, CaError> {
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let session = self
            .module
            .open_ro_session_no_drop(slot)
            .map_err(p11("open a session"))?;
        self.login(session)
    }

    /// Logs `session` in as the user (a module logs in every session of the process at once,
    /// so "already logged in" is success).
    fn login(&self, session: Session) -> Result<Session, CaError> {
        let err = match session.login(UserType::User, Some(&self.config.pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => return Ok(session),
            Err(P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                CaError::Token(format!(
                    "token {:?} refused the PIN (check --pkcs11-pin-file or DEVID_PKCS11_PIN)",
                    self.label
                ))
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => CaError::Token(format!(
                "token {:?} has locked the user PIN after too many wrong tries",
                self.label
            )),
            Err(e) => p11("log in")(e),
        };
        let _ = session.close();
        Err(err)
    }
}

/// `map_err` adapter: a module call that failed, naming what was being done.
pub(super) fn p11(what: &'static str) -> impl Fn(P11Error) -> CaError {
    move |e| CaError::Token(format!("cannot {what}: {e}"))
}

/// Each module is loaded and initialized once per process and finalized only by
/// [`Token::reset`]: PKCS#11 allows one `C_Initialize` per process, and the keys of a loaded
/// CA keep using it.
fn load_module(path: &Path) -> Result<Pkcs11, CaError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let module = Pkcs11::new(path).map_err(|e| {
        CaError::Token(format!(
            "cannot load the PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    initialize(&module, path)?;
    modules.insert(path.to_path_buf(), module.clone());
    Ok(module)
}

fn initialize(module: &Pkcs11, path: &Path) -> Result<(), CaError> {
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(CaError::Token(format!(
            "cannot initialize the PKCS#11 module {}: {e}",
            path.display()
        ))),
    }
}

/// The slot of the token `selector` names, and the token's label.
fn find_slot(
    module: &Pkcs11,
    selector: &TokenSelector,
    config: &TokenConfig,
) -> Result<(Slot, String), CaError> {
    let slots = module
        .get_slots_with_initialized_token()
        .map_err(p11("list the token slots"))?;
    for slot in slots {
        let info = module
            .get_token_info(slot)
            .map_err(p11("read token information"))?;
        if selector.matches(&info) {
            return Ok((slot, info.label().trim_end().to_string()));
        }
    }
    Err(CaError::Token(format!(
        "no initialized token matches {:?} in {}",
        config.token,
        config.module.display()
    )))
}

/// Which token: by label, or by the token attributes of an RFC 7512 URI.
#[derive(Debug, Default, PartialEq, Eq)]
struct TokenSelector {
    label: Option<String>,
    serial: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
}

impl TokenSelector {
    fn parse(token: &str) -> Result<TokenSelector, CaError> {
        let Some(rest) = token.strip_prefix("pkcs11:") else {
            return Ok(TokenSelector {
                label: Some(token.to_string()),
                ..TokenSelector::default()
            });
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if query
            .split('&')
            .any(|q| q.starts_with("pin-value=") || q.starts_with("pin-source="))
        {
            return Err(CaError::Token(
                "the token URI must not carry the PIN; give it with --pkcs11-pin-file or \
                 DEVID_PKCS11_PIN"
                    .into(),
            ));
        }
        let mut s = TokenSelector::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            let value = Some(String::from_utf8_lossy(&percent_decode(value)?).into_owned());
            match name {
                "token" => s.label = value,
                "serial" => s.serial = value,
                "manufacturer" => s.manufacturer = value,
                "model" => s.model = value,
                // Object and library attributes do not narrow the token.
                _ => {}
            }
        }
        if s == TokenSelector::default() {
            return Err(CaError::Token(format!(
                "the URI {token:?} names no token (give token=, serial=, manufacturer= or model=)"
            )));
        }
        Ok(s)
    }

    fn matches(&self, info: &cryptoki::slot::TokenInfo) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w == have.trim_end())
        };
        eq(&self.label, info.label())
            && eq(&self.serial, info.serial_number())
            && eq(&self.manufacturer, info.manufacturer_id())
            && eq(&self.model, info.model())
    }
}

/// RFC 3986 percent-decoding (RFC 7512 attribute values).
pub(super) fn percent_decode(s: &str) -> Result<Vec<u8>, CaError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| CaError::Token(format!("bad percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 3986 percent-encoding of everything but unreserved characters; `all` encodes every
/// byte (RFC 7512 asks for that in `id`).
pub(super) fn percent_encode(bytes: &[u8], all: bool) -> String {
    bytes
        .iter()
        .map(|&b| {
            if !all && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_selectors() {
        assert_eq!(
            TokenSelector::parse("devid CA").ok(),
            Some(TokenSelector {
                label: Some("devid CA".into()),
                ..TokenSelector::default()
            })
        );
        let uri = TokenSelector::parse("pkcs11:token=devid%20CA;serial=0123;object=x").ok();
        assert_eq!(
            uri,
            Some(TokenSelector {
                label: Some("devid CA".into()),
                serial: Some("0123".into()),
                ..TokenSelector::default()
            })
        );
        assert!(TokenSelector::parse("pkcs11:token=a?pin-value=1234").is_err());
        assert!(TokenSelector::parse("pkcs11:object=x").is_err());
        assert!(TokenSelector::parse("pkcs11:token=%zz").is_err());
    }

    #[test]
    fn percent_round_trip() {
        let raw = b"devid root/1 \x00\xff";
        assert_eq!(
            percent_decode(&percent_encode(raw, false)).ok().as_deref(),
            Some(&raw[..])
        );
        assert_eq!(percent_encode(b"\x01a", true), "%01%61");
        assert_eq!(percent_encode(b"a b", false), "a%20b");
    }
}
