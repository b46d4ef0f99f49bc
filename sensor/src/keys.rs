//! K_mac and K_enc from the sensor key K (HKDF-SHA256, RFC 5869, empty salt, L = 32).

use ring::hkdf;
use zeroize::Zeroize;

use crate::{id_len, Error, KEY_LEN};

/// Info label of K_mac.
pub const LABEL_MAC: &[u8] = b"DEVID-S1 mac";
/// Info label of K_enc; also the first bytes of the seal's associated data.
pub const LABEL_SEAL: &[u8] = b"DEVID-S1 seal";

/// A sensor's derived keys. Both are wiped when the value is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// K_mac = HKDF(K, info = "DEVID-S1 mac" || u8(len(id)) || id).
    pub mac: [u8; KEY_LEN],
    /// K_enc = HKDF(K, info = "DEVID-S1 seal" || u8(len(id)) || id).
    pub enc: [u8; KEY_LEN],
}

impl Drop for DerivedKeys {
    fn drop(&mut self) {
        self.mac.zeroize();
        self.enc.zeroize();
    }
}

impl core::fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DerivedKeys(..)")
    }
}

/// K_mac and K_enc of sensor `id` (its ClientID in ASCII, 1 to 255 bytes) from its key `k`.
pub fn derive(k: &[u8; KEY_LEN], id: &[u8]) -> Result<DerivedKeys, Error> {
    let len = [id_len(id)?];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(k);
    let mut keys = DerivedKeys {
        mac: [0; KEY_LEN],
        enc: [0; KEY_LEN],
    };
    expand(&prk, LABEL_MAC, &len, id, &mut keys.mac);
    expand(&prk, LABEL_SEAL, &len, id, &mut keys.enc);
    Ok(keys)
}

fn expand(prk: &hkdf::Prk, label: &[u8], len: &[u8; 1], id: &[u8], out: &mut [u8; KEY_LEN]) {
    let info = [label, &len[..], id];
    // HKDF_SHA256 as the key type asks for 32 bytes, far below HKDF's limit of 255 * 32, and
    // `out` is 32 bytes: neither call can fail.
    let filled = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out));
    debug_assert!(filled.is_ok());
}
