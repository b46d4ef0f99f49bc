//! Re-authentication (AUTH 0x19) on the live connection: starting it, answering the broker's
//! AUTH 0x18, and switching to the new keys on AUTH 0x00.

use tokio::time::Instant;

use super::task::Task;
use super::{Event, Reply};
use crate::connection::ClientError;
use crate::mqtt::{Packet, Properties, Property, ReasonCode, ReasonOnly};

impl Task {
    /// Sends AUTH 0x19. Local refusals go to `reply`; an `Err` is a broken connection.
    pub(super) async fn start_reauth(
        &mut self,
        reply: Option<Reply<()>>,
    ) -> Result<(), ClientError> {
        let refuse = |reply: Option<Reply<()>>, e: ClientError| {
            if let Some(tx) = reply {
                let _ = tx.send(Err(e));
            }
            Ok(())
        };
        if self.reauth_running {
            return refuse(
                reply,
                ClientError::Protocol("a re-authentication is already running".into()),
            );
        }
        let Some(h) = self.hook.as_mut() else {
            return refuse(
                reply,
                ClientError::Protocol("re-authentication needs an authenticated session".into()),
            );
        };
        let (method, data) = match h.reauth_start() {
            Ok(x) => x,
            Err(e) => return refuse(reply, e.into()),
        };
        self.send(&auth(ReasonCode::RE_AUTHENTICATE, method, data))
            .await?;
        self.reauth = reply;
        self.reauth_running = true;
        self.reauth_started = Instant::now();
        Ok(())
    }

    pub(super) async fn incoming_auth(&mut self, a: ReasonOnly) -> Result<(), Event> {
        let (true, Some(hook)) = (self.reauth_running, self.hook.as_mut()) else {
            return Err(Event::Closed("AUTH outside a re-authentication".into()));
        };
        let data = a.properties.authentication_data().unwrap_or(&[]).to_vec();
        let failed = |this: &mut Self, e: ClientError| {
            let msg = e.to_string();
            if let Some(tx) = this.reauth.take() {
                let _ = tx.send(Err(e));
            }
            this.reauth_running = false;
            Event::Closed(format!("re-authentication failed: {msg}"))
        };
        match a.reason {
            ReasonCode::CONTINUE_AUTHENTICATION => match hook.reauth_challenge(&data) {
                Ok(reply) => {
                    let method = a
                        .properties
                        .authentication_method()
                        .unwrap_or("")
                        .to_owned();
                    self.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, method, reply))
                        .await
                        .map_err(|e| Event::Closed(e.to_string()))?;
                }
                Err(e) => return Err(failed(self, e.into())),
            },
            ReasonCode::SUCCESS => match hook.reauth_finish(&data) {
                Ok(session_id) => {
                    self.reauth_running = false;
                    self.since_rotation = 0;
                    self.rotated_at = Instant::now();
                    if let Some(tx) = self.reauth.take() {
                        let _ = tx.send(Ok(()));
                    }
                    let _ = self.events.send(Event::Reauthenticated { session_id });
                }
                Err(e) => return Err(failed(self, e.into())),
            },
            _ => {
                return Err(failed(
                    self,
                    ClientError::Protocol("AUTH 0x19 from the broker".into()),
                ))
            }
        }
        Ok(())
    }
}

/// An AUTH packet of `method` carrying `data`.
fn auth(reason: ReasonCode, method: String, data: Vec<u8>) -> Packet {
    Packet::Auth(ReasonOnly {
        reason,
        properties: Properties::new()
            .with(Property::AuthenticationMethod(method))
            .with(Property::AuthenticationData(data)),
    })
}
