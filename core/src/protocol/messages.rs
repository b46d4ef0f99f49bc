//! The eight DEVID-1 messages: exact parsing (borrowing from the input) and encoding.

use super::codec::{put_u16_prefixed, Reader};
use super::error::{DecodeError, Error};
use super::{MAX_CERTS, VERSION};

pub(crate) const CLIENT_HELLO: u8 = 0x01;
pub(crate) const SERVER_HELLO: u8 = 0x02;
pub(crate) const CLIENT_FINISH: u8 = 0x03;
pub(crate) const SERVER_FINISH: u8 = 0x04;
pub(crate) const RESUME_HELLO: u8 = 0x11;
pub(crate) const RESUME_CHALLENGE: u8 = 0x12;
pub(crate) const RESUME_PROOF: u8 = 0x13;
pub(crate) const RESUME_FINISH: u8 = 0x14;

pub(crate) const NONCE_LEN: usize = 32;
pub(crate) const SHARE_LEN: usize = 65;
pub(crate) const SIG_LEN: usize = 64;
pub(crate) const MAC_LEN: usize = 32;

/// Checks the type byte; an empty message is truncated, another type is out of order.
fn expect_type(r: &mut Reader<'_>, want: u8, name: &'static str) -> Result<(), Error> {
    let got = r.u8()?;
    if got != want {
        return Err(Error::UnexpectedMessage {
            expected: name,
            got,
        });
    }
    Ok(())
}

fn expect_version(r: &mut Reader<'_>) -> Result<(), Error> {
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::UnsupportedVersion(v));
    }
    Ok(())
}

/// Runs `f` over the whole of `bytes` and rejects trailing bytes.
fn read_exact<'a, T>(
    bytes: &'a [u8],
    f: impl FnOnce(&mut Reader<'a>) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut r = Reader::new(bytes);
    let v = f(&mut r)?;
    r.expect_empty()?;
    Ok(v)
}

/// `certs`: u8 count, then that many `opaque<u16>` DER certificates, leaf first.
pub(crate) fn read_certs<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a [u8]>, Error> {
    let n = usize::from(r.u8()?);
    if n == 0 {
        return Err(DecodeError::EmptyCertificate.into());
    }
    if n > MAX_CERTS {
        return Err(DecodeError::TooManyCertificates.into());
    }
    let mut certs = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sub = r.sub_u16()?;
        let der = sub.rest();
        if der.is_empty() {
            return Err(DecodeError::EmptyCertificate.into());
        }
        certs.push(der);
    }
    Ok(certs)
}

pub(crate) fn put_certs<C: AsRef<[u8]>>(out: &mut Vec<u8>, certs: &[C]) -> Result<(), Error> {
    let n = u8::try_from(certs.len()).map_err(|_| DecodeError::TooManyCertificates)?;
    out.push(n);
    for c in certs {
        put_u16_prefixed(out, |o| o.extend_from_slice(c.as_ref()))?;
    }
    Ok(())
}

/// ClientHello = 0x01 || 0x01 || nonce_c[32] || share_c[65] || certs_c.
pub(crate) struct ClientHello<'a> {
    pub nonce: &'a [u8; NONCE_LEN],
    pub share: &'a [u8; SHARE_LEN],
    pub certs: Vec<&'a [u8]>,
}

impl<'a> ClientHello<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        read_exact(bytes, |r| {
            expect_type(r, CLIENT_HELLO, "ClientHello")?;
            expect_version(r)?;
            Ok(ClientHello {
                nonce: r.array()?,
                share: r.array()?,
                certs: read_certs(r)?,
            })
        })
    }

    pub(crate) fn encode<C: AsRef<[u8]>>(
        nonce: &[u8; NONCE_LEN],
        share: &[u8],
        certs: &[C],
    ) -> Result<Vec<u8>, Error> {
        let mut out = vec![CLIENT_HELLO, VERSION];
        out.extend_from_slice(nonce);
        out.extend_from_slice(share);
        put_certs(&mut out, certs)?;
        Ok(out)
    }
}

/// ServerHello = 0x02 || nonce_s[32] || share_s[65] || certs_s || sig_s[64] || mac_s[32].
pub(crate) struct ServerHello<'a> {
    pub nonce: &'a [u8; NONCE_LEN],
    pub share: &'a [u8; SHARE_LEN],
    pub certs: Vec<&'a [u8]>,
    /// The bytes before sig_s (they enter TH1).
    pub signed_part: &'a [u8],
    pub sig: &'a [u8; SIG_LEN],
    pub mac: &'a [u8; MAC_LEN],
}

impl<'a> ServerHello<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        read_exact(bytes, |r| {
            expect_type(r, SERVER_HELLO, "ServerHello")?;
            let nonce = r.array()?;
            let share = r.array()?;
            let certs = read_certs(r)?;
            let signed_len = bytes.len() - r.remaining();
            let sig = r.array()?;
            let mac = r.array()?;
            Ok(ServerHello {
                nonce,
                share,
                certs,
                signed_part: &bytes[..signed_len],
                sig,
                mac,
            })
        })
    }

    /// The ServerHello bytes before sig_s; sig_s and mac_s are appended by the caller.
    pub(crate) fn encode_signed_part<C: AsRef<[u8]>>(
        nonce: &[u8; NONCE_LEN],
        share: &[u8],
        certs: &[C],
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(
            1 + NONCE_LEN
                + SHARE_LEN
                + 1
                + SIG_LEN
                + MAC_LEN
                + certs.iter().map(|c| 2 + c.as_ref().len()).sum::<usize>(),
        );
        out.push(SERVER_HELLO);
        out.extend_from_slice(nonce);
        out.extend_from_slice(share);
        put_certs(&mut out, certs)?;
        Ok(out)
    }
}

/// ClientFinish = 0x03 || sig_c[64] || mac_c[32].
pub(crate) struct ClientFinish<'a> {
    pub sig: &'a [u8; SIG_LEN],
    pub mac: &'a [u8; MAC_LEN],
}

impl<'a> ClientFinish<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        read_exact(bytes, |r| {
            expect_type(r, CLIENT_FINISH, "ClientFinish")?;
            Ok(ClientFinish {
                sig: r.array()?,
                mac: r.array()?,
            })
        })
    }

    pub(crate) fn encode(sig: &[u8; SIG_LEN], mac: &[u8; MAC_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + SIG_LEN + MAC_LEN);
        out.push(CLIENT_FINISH);
        out.extend_from_slice(sig);
        out.extend_from_slice(mac);
        out
    }
}

/// ServerFinish (0x04) and ResumeFinish (0x14) share one shape:
/// type || ticket_lifetime (u32) || ticket (opaque<u16>) || mac_f[32].
pub(crate) struct Finish<'a> {
    pub lifetime: u32,
    pub ticket: &'a [u8],
    /// The bytes before mac_f.
    pub maced_part: &'a [u8],
    pub mac: &'a [u8; MAC_LEN],
}

impl<'a> Finish<'a> {
    pub(crate) fn read(bytes: &'a [u8], ty: u8, name: &'static str) -> Result<Self, Error> {
        read_exact(bytes, |r| {
            expect_type(r, ty, name)?;
            let lifetime = r.u32()?;
            let ticket = r.sub_u16()?.rest();
            // Lifetime 0 goes with an empty ticket (no ticket) and only with it.
            if (lifetime == 0) != ticket.is_empty() {
                return Err(DecodeError::BadValue.into());
            }
            let maced_len = bytes.len() - r.remaining();
            let mac = r.array()?;
            Ok(Finish {
                lifetime,
                ticket,
                maced_part: &bytes[..maced_len],
                mac,
            })
        })
    }

    /// The bytes before mac_f.
    pub(crate) fn encode_maced_part(
        ty: u8,
        lifetime: u32,
        ticket: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(1 + 4 + 2 + ticket.len() + MAC_LEN);
        out.push(ty);
        out.extend_from_slice(&lifetime.to_be_bytes());
        put_u16_prefixed(&mut out, |o| o.extend_from_slice(ticket))?;
        Ok(out)
    }
}

/// ResumeHello = 0x11 || 0x01 || nonce_c[32] || ticket (opaque<u16>).
pub(crate) struct ResumeHello<'a> {
    pub nonce: &'a [u8; NONCE_LEN],
    pub ticket: &'a [u8],
}

impl<'a> ResumeHello<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        read_exact(bytes, |r| {
            expect_type(r, RESUME_HELLO, "ResumeHello")?;
            expect_version(r)?;
            let nonce = r.array()?;
            let ticket = r.sub_u16()?.rest();
            if ticket.is_empty() {
                return Err(DecodeError::BadValue.into());
            }
            Ok(ResumeHello { nonce, ticket })
        })
    }

    pub(crate) fn encode(nonce: &[u8; NONCE_LEN], ticket: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(2 + NONCE_LEN + 2 + ticket.len());
        out.push(RESUME_HELLO);
        out.push(VERSION);
        out.extend_from_slice(nonce);
        put_u16_prefixed(&mut out, |o| o.extend_from_slice(ticket))?;
        Ok(out)
    }
}

/// ResumeChallenge = 0x12 || nonce_s[32].
pub(crate) fn read_resume_challenge(bytes: &[u8]) -> Result<&[u8; NONCE_LEN], Error> {
    read_exact(bytes, |r| {
        expect_type(r, RESUME_CHALLENGE, "ResumeChallenge")?;
        Ok(r.array()?)
    })
}

pub(crate) fn encode_resume_challenge(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + NONCE_LEN);
    out.push(RESUME_CHALLENGE);
    out.extend_from_slice(nonce);
    out
}

/// ResumeProof = 0x13 || mac_c[32].
pub(crate) fn read_resume_proof(bytes: &[u8]) -> Result<&[u8; MAC_LEN], Error> {
    read_exact(bytes, |r| {
        expect_type(r, RESUME_PROOF, "ResumeProof")?;
        Ok(r.array()?)
    })
}

pub(crate) fn encode_resume_proof(mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + MAC_LEN);
    out.push(RESUME_PROOF);
    out.extend_from_slice(mac);
    out
}
