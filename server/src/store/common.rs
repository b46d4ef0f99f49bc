// The SQL both backends share. This file is not a module of its own: `sqlite.rs` and
// `postgres.rs` each `include!` it after defining `Db`, `Backend { write, read, .. }`, the
// constants `MAX_BINDS`, `NUMBERED_PARAMS`, `CACHE_MAX_ROWS`, `FOR_UPDATE`, the hooks
// `begin_write`, `lock_feed`, `notify_feed`, `lock_bootstrap`, and the bulk statements of
// registration (`lookup_existing`, `insert_devices`, `insert_certificates`,
// `insert_register_audit`, `load_devices_by_id`: multi-row VALUES on SQLite, arrays with
// UNNEST/ANY on PostgreSQL). So the same statements are compiled and type-checked against each
// concrete sqlx driver, without generic-database trait bounds and without the Any driver.
// Hand-written placeholders are `$N`, which both drivers accept.
//
// Lock order in every write transaction: device row, then its certificates, then the feed lock
// (last, held only until commit).

use sqlx::Row as _;

type Tx = sqlx::Transaction<'static, Db>;
type DbRow = <Db as sqlx::Database>::Row;
type DbConn = <Db as sqlx::Database>::Connection;

const DEVICE_COLS: &str = "d.id, d.client_id, d.hardware_serial, d.model, d.metadata, d.status, \
     d.created_at, d.revoked_at, d.reason, d.last_seen, d.last_address";
const CERT_COLS: &str = "c.serial AS c_serial, d.client_id AS c_client_id, \
     c.fingerprint AS c_fingerprint, c.der AS c_der, c.not_before AS c_not_before, \
     c.not_after AS c_not_after, c.status AS c_status, c.profile AS c_profile, \
     c.csr_sha256 AS c_csr_sha256, c.revoked_at AS c_revoked_at, c.reason AS c_reason, \
     c.created_at AS c_created_at, c.device_id AS c_device_id";
const TOKEN_COLS: &str = "id, name, role, models, hash, created_at, expires_at, revoked_at";
const FEED_COLS: &str = "seq, scope, action, client_id, serials, reason, at";
const AUDIT_COLS: &str = "id, at, actor_id, actor_name, action, target, outcome, detail";
const MODEL_COLS: &str = "name, client_id_prefix, topic_policy, message_auth, updated_at";

fn device_from_row(r: &DbRow) -> Result<DeviceRow, StoreError> {
    Ok(DeviceRow {
        id: r.try_get("id")?,
        client_id: r.try_get("client_id")?,
        hardware_serial: r.try_get("hardware_serial")?,
        model: r.try_get("model")?,
        metadata: r.try_get("metadata")?,
        status: parse_device_state(&r.try_get::<String, _>("status")?)?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
        reason: parse_reason(r.try_get("reason")?)?,
        last_seen: r.try_get("last_seen")?,
        last_address: r.try_get("last_address")?,
    })
}

/// A certificate from `CERT_COLS`; None when a LEFT JOIN found no certificate.
fn cert_from_row(r: &DbRow) -> Result<Option<CertRow>, StoreError> {
    let Some(serial) = r.try_get::<Option<String>, _>("c_serial")? else {
        return Ok(None);
    };
    Ok(Some(CertRow {
        serial,
        client_id: r.try_get("c_client_id")?,
        fingerprint: r.try_get("c_fingerprint")?,
        der: r.try_get("c_der")?,
        not_before: r.try_get("c_not_before")?,
        not_after: r.try_get("c_not_after")?,
        status: parse_cert_state(&r.try_get::<String, _>("c_status")?)?,
        profile: r.try_get("c_profile")?,
        csr_sha256: r.try_get("c_csr_sha256")?,
        revoked_at: r.try_get("c_revoked_at")?,
        reason: parse_reason(r.try_get("c_reason")?)?,
        created_at: r.try_get("c_created_at")?,
    }))
}

/// Groups rows of `SELECT DEVICE_COLS, CERT_COLS ... ORDER BY d.id, c.id DESC`.
fn assemble(rows: &[DbRow]) -> Result<Vec<DeviceWithCerts>, StoreError> {
    let mut out: Vec<DeviceWithCerts> = Vec::new();
    for r in rows {
        let id: i64 = r.try_get("id")?;
        if out.last().map(|d| d.device.id) != Some(id) {
            out.push(DeviceWithCerts {
                device: device_from_row(r)?,
                certs: Vec::new(),
            });
        }
        if let (Some(cert), Some(last)) = (cert_from_row(r)?, out.last_mut()) {
            last.certs.push(cert);
        }
    }
    Ok(out)
}

/// The id that `insert_devices` gave the device with this hardware serial.
fn inserted_id(ids: &HashMap<String, i64>, hardware_serial: &str) -> Result<i64, StoreError> {
    ids.get(hardware_serial)
        .copied()
        .ok_or_else(|| corrupt("inserted device id for serial", hardware_serial))
}

/// Adds a row of (spki_sha256, compromised_at, client_id) to a key look-up's answer.
fn insert_known_key(keys: &mut HashMap<[u8; 32], KnownKey>, r: &DbRow) -> Result<(), StoreError> {
    let hash: Vec<u8> = r.try_get("spki_sha256")?;
    let hash: [u8; 32] = hash
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("key hash", &hex::encode(&hash)))?;
    keys.insert(
        hash,
        KnownKey {
            holder: r.try_get("client_id")?,
            compromised: r.try_get::<Option<i64>, _>("compromised_at")?.is_some(),
        },
    );
    Ok(())
}

fn token_from_row(r: &DbRow) -> Result<TokenRow, StoreError> {
    let models: Option<String> = r.try_get("models")?;
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: parse_role(&r.try_get::<String, _>("role")?)?,
        models: models
            .map(|m| parse_json_list("token models", &m))
            .transpose()?,
        hash: r.try_get("hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn feed_from_row(r: &DbRow) -> Result<FeedEntryRow, StoreError> {
    Ok(FeedEntryRow {
        seq: r.try_get("seq")?,
        scope: parse_scope(&r.try_get::<String, _>("scope")?)?,
        action: parse_action(&r.try_get::<String, _>("action")?)?,
        client_id: r.try_get("client_id")?,
        serials: parse_json_list("feed serials", &r.try_get::<String, _>("serials")?)?,
        reason: parse_reason(r.try_get("reason")?)?,
        at: r.try_get("at")?,
    })
}

fn audit_from_row(r: &DbRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        record: AuditRecord {
            at: r.try_get("at")?,
            actor: Actor {
                id: r.try_get("actor_id")?,
                name: r.try_get("actor_name")?,
            },
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
        },
    })
}

fn model_from_row(r: &DbRow) -> Result<ModelRow, StoreError> {
    Ok(ModelRow {
        name: r.try_get("name")?,
        client_id_prefix: r.try_get("client_id_prefix")?,
        topic_policy: r.try_get("topic_policy")?,
        message_auth: r.try_get("message_auth")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn insert_audit_on(conn: &mut DbConn, rec: &AuditRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor_id, actor_name, action, target, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(rec.at)
    .bind(&rec.actor.id)
    .bind(&rec.actor.name)
    .bind(&rec.action)
    .bind(&rec.target)
    .bind(&rec.outcome)
    .bind(&rec.detail)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_token_on(conn: &mut DbConn, t: &TokenRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (id, name, role, models, hash, created_at, expires_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.role.as_str())
    .bind(t.models.as_deref().map(json_list))
    .bind(&t.hash)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.revoked_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One device (with certificates) by a unique text column of `devices d`.
async fn load_device_where(
    conn: &mut DbConn,
    column: &str,
    value: &str,
) -> Result<Option<DeviceWithCerts>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_COLS}, {CERT_COLS} FROM devices d \
         LEFT JOIN certificates c ON c.device_id = d.id \
         WHERE d.{column} = $1 ORDER BY d.id, c.id DESC"
    );
    let rows = sqlx::query(&sql).bind(value).fetch_all(conn).await?;
    Ok(assemble(&rows)?.into_iter().next())
}

async fn load_device_by_id(conn: &mut DbConn, id: i64) -> Result<DeviceWithCerts, StoreError> {
    load_devices_by_id(conn, &[id])
        .await?
        .remove(&id)
        .ok_or(StoreError::NotFound)
}

/// Takes the device's row lock (PostgreSQL) and returns the row.
async fn lock_device(tx: &mut Tx, client_id: &str) -> Result<DeviceRow, StoreError> {
    let sql = format!("SELECT {DEVICE_COLS} FROM devices d WHERE d.client_id = $1{FOR_UPDATE}");
    let row = sqlx::query(&sql)
        .bind(client_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    device_from_row(&row)
}

/// Takes the row lock of the device with this id (PostgreSQL) and returns the row.
async fn lock_device_by_id(tx: &mut Tx, id: i64) -> Result<DeviceRow, StoreError> {
    let sql = format!("SELECT {DEVICE_COLS} FROM devices d WHERE d.id = $1{FOR_UPDATE}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    device_from_row(&row)
}

async fn load_cert(conn: &mut DbConn, serial: &str) -> Result<Option<CertRow>, StoreError> {
    let sql = format!(
        "SELECT {CERT_COLS} FROM certificates c JOIN devices d ON d.id = c.device_id \
         WHERE c.serial = $1"
    );
    match sqlx::query(&sql).bind(serial).fetch_optional(conn).await? {
        Some(r) => cert_from_row(&r),
        None => Ok(None),
    }
}

/// Appends one feed entry: seq = max + 1 under the feed lock, NOTIFY in the same transaction.
async fn append_feed(
    tx: &mut Tx,
    scope: RevocationScope,
    action: RevocationAction,
    client_id: &str,
    serials: Vec<String>,
    reason: Option<RevocationReason>,
    at: i64,
) -> Result<FeedEntryRow, StoreError> {
    Backend::lock_feed(tx).await?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO feed (seq, scope, action, client_id, serials, reason, at) \
         SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, $4, $5, $6 FROM feed RETURNING seq",
    )
    .bind(scope_str(scope))
    .bind(action_str(action))
    .bind(client_id)
    .bind(json_list(&serials))
    .bind(reason.map(|r| r.as_str()))
    .bind(at)
    .fetch_one(&mut **tx)
    .await?;
    Backend::notify_feed(tx, seq).await?;
    Ok(FeedEntryRow {
        seq,
        scope,
        action,
        client_id: client_id.to_string(),
        serials,
        reason,
        at,
    })
}

/// Whose keys [`mark_keys_compromised`] marks.
enum KeysOf<'a> {
    Device(i64),
    Certificate(&'a str),
}

/// Marks the keys of a device's certificates (or of one certificate) as revoked for
/// keyCompromise, so that they are never certified again. A key bound to an earlier device
/// (two devices sharing a key from before keys were tracked) is marked on that binding.
async fn mark_keys_compromised(tx: &mut Tx, of: KeysOf<'_>, at: i64) -> Result<(), StoreError> {
    const UPSERT: &str = "INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
         SELECT DISTINCT c.spki_sha256, c.device_id, $1 FROM certificates c \
         WHERE c.spki_sha256 IS NOT NULL AND ";
    const ON_CONFLICT: &str = " ON CONFLICT (spki_sha256) DO UPDATE SET \
         compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)";
    let q = match of {
        KeysOf::Device(id) => {
            sqlx::query(&format!("{UPSERT}c.device_id = $2{ON_CONFLICT}"))
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
        }
        KeysOf::Certificate(serial) => {
            sqlx::query(&format!("{UPSERT}c.serial = $2{ON_CONFLICT}"))
                .bind(at)
                .bind(serial)
                .execute(&mut **tx)
                .await
        }
    };
    q?;
    Ok(())
}

fn audit_ok(actor: &Actor, action: &str, target: &str, at: i64) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.clone(),
        action: action.to_string(),
        target: target.to_string(),
        outcome: "ok".to_string(),
        detail: None,
    }
}

impl Backend {
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    // ---- tokens ----

    pub(super) async fn bootstrap_admin(
        &self,
        t: &TokenRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        Self::lock_bootstrap(&mut tx).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        insert_token_on(&mut tx, t).await?;
        insert_audit_on(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn insert_token(
        &self,
        t: &TokenRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_token_on(&mut tx, t).await?;
        insert_audit_on(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn find_token_by_hash(
        &self,
        hash: &[u8],
    ) -> Result<Option<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1");
        match sqlx::query(&sql)
            .bind(hash)
            .fetch_optional(&self.read)
            .await?
        {
            Some(r) => Ok(Some(token_from_row(&r)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(token_from_row).collect()
    }

    pub(super) async fn revoke_token(
        &self,
        id: &str,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<TokenRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING {TOKEN_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(at)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let t = token_from_row(&row)?;
        insert_audit_on(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(t)
    }

    // ---- registration ----

    /// Certificates stored before keys were tracked carry no `spki_sha256`: reads each one's
    /// key out of its DER (SQL cannot), stores the hash and binds the key to the device, oldest
    /// certificate first (a key two such devices share stays with the earlier one), marked
    /// compromised if the certificate or its device was revoked for keyCompromise. Runs when
    /// the store opens; with nothing to do it is one look-up in an empty partial index. Safe
    /// to run from several processes at once (every write is conditional or an upsert).
    /// Returns how many certificates it filled.
    pub(super) async fn backfill_keys(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            let rows = sqlx::query(
                "SELECT c.id, c.device_id, c.der, c.reason, c.revoked_at, \
                 d.reason AS d_reason, d.revoked_at AS d_revoked_at \
                 FROM certificates c JOIN devices d ON d.id = c.device_id \
                 WHERE c.spki_sha256 IS NULL ORDER BY c.id LIMIT 500",
            )
            .fetch_all(&self.read)
            .await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut tx = self.begin_write().await?;
            for r in &rows {
                let id: i64 = r.try_get("id")?;
                let der: Vec<u8> = r.try_get("der")?;
                let compromised = |reason: &str, at: &str| -> Result<Option<i64>, StoreError> {
                    let reason: Option<String> = r.try_get(reason)?;
                    Ok(match reason.as_deref() {
                        Some("keyCompromise") => r.try_get::<Option<i64>, _>(at)?,
                        _ => None,
                    })
                };
                let compromised_at = compromised("reason", "revoked_at")?
                    .or(compromised("d_reason", "d_revoked_at")?);
                // A DER that is not a certificate (only if edited by hand) is marked with an
                // empty hash, so that it is not read again; no key is bound for it.
                let hash = devid_core::csr::certificate_spki_sha256(&der);
                if hash.is_none() {
                    tracing::warn!(certificate = id, "stored certificate does not parse; its key is not bound");
                }
                let stored: Vec<u8> = hash.map(|h| h.to_vec()).unwrap_or_default();
                sqlx::query(
                    "UPDATE certificates SET spki_sha256 = $1 WHERE id = $2 AND spki_sha256 IS NULL",
                )
                .bind(&stored)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if hash.is_some() {
                    sqlx::query(
                        "INSERT INTO device_keys (spki_sha256, device_id, compromised_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (spki_sha256) DO UPDATE SET \
                         compromised_at = COALESCE(device_keys.compromised_at, excluded.compromised_at)",
                    )
                    .bind(&stored)
                    .bind(r.try_get::<i64, _>("device_id")?)
                    .bind(compromised_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            done += rows.len();
        }
    }

    /// One attempt of `Store::register` (which retries on a uniqueness race).
    pub(super) async fn register_once(
        &self,
        items: &[NewDevice],
        mode: RegMode,
        actor: &Actor,
        at: i64,
    ) -> Result<Vec<Result<RegOutcome, RegConflict>>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Keys first: on PostgreSQL each statement sees the commits made before it started, and
        // a device's key is committed with the device, so a key seen here has its device seen by
        // the look-up after it (a replay racing its own first registration in another process
        // is then a replay, not a key conflict). A key committed in between is missed, and the
        // insert's unique violation sends the call round again.
        let keys = lookup_keys(&mut tx, items).await?;
        let (serials, client_ids) = lookup_existing(&mut tx, items).await?;
        // An AllOrNothing conflict returns here, before anything was written; dropping `tx`
        // rolls back.
        let plans = classify(items, &serials, &client_ids, &keys, mode)?;
        let mut created: Vec<&NewDevice> = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| **p == Plan::Create)
            .map(|(it, _)| it)
            .collect();
        created.sort_unstable_by(|a, b| a.hardware_serial.cmp(&b.hardware_serial));
        let ids = if created.is_empty() {
            HashMap::new()
        } else {
            let ids = insert_devices(&mut tx, &created).await?;
            insert_certificates(&mut tx, &created, &ids).await?;
            insert_device_keys(&mut tx, &created, &ids).await?;
            insert_register_audit(&mut tx, &created, actor, at).await?;
            ids
        };
        let existing_id = |r: ExistingRef| -> Result<i64, StoreError> {
            match r {
                ExistingRef::Stored(id) => Ok(id),
                ExistingRef::InBatch(first) => {
                    inserted_id(&ids, &items[first].hardware_serial)
                }
            }
        };
        let mut wanted = Vec::new();
        for p in &plans {
            if let &Plan::Existing(r) = p {
                wanted.push(existing_id(r)?);
            }
        }
        let loaded = if wanted.is_empty() {
            HashMap::new()
        } else {
            load_devices_by_id(&mut tx, &wanted).await?
        };
        tx.commit().await?;
        plans
            .into_iter()
            .map(|p| match p {
                Plan::Create => Ok(Ok(RegOutcome::Created)),
                Plan::Conflict(c) => Ok(Err(c)),
                Plan::Existing(r) => {
                    let id = existing_id(r)?;
                    let d = loaded.get(&id).cloned().ok_or(StoreError::NotFound)?;
                    Ok(Ok(RegOutcome::Existing(Box::new(d))))
                }
            })
            .collect()
    }

    // ---- queries ----

    pub(super) async fn get_device(
        &self,
        client_id: &str,
    ) -> Result<Option<DeviceWithCerts>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_device_where(&mut conn, "client_id", client_id).await
    }

    pub(super) async fn get_device_by_serial(
        &self,
        hardware_serial: &str,
    ) -> Result<Option<DeviceWithCerts>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_device_where(&mut conn, "hardware_serial", hardware_serial).await
    }

    pub(super) async fn hardware_serial_exists(
        &self,
        hardware_serial: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE hardware_serial = $1")
            .bind(hardware_serial)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    pub(super) async fn client_id_exists(&self, client_id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    pub(super) async fn list_devices(
        &self,
        f: &DeviceFilter,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let mut q = sqlx::QueryBuilder::<Db>::new(format!(
            "SELECT {DEVICE_COLS} FROM devices d WHERE d.id > "
        ));
        q.push_bind(f.after_id.unwrap_or(0));
        if let Some(s) = f.status {
            q.push(" AND d.status = ").push_bind(s.as_str());
        }
        if let Some(m) = &f.model {
            q.push(" AND d.model = ").push_bind(m.as_str());
        }
        if let Some(t) = f.created_after {
            q.push(" AND d.created_at > ").push_bind(t);
        }
        q.push(" ORDER BY d.id LIMIT ")
            .push_bind(clamp_limit(f.limit));
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(device_from_row).collect()
    }

    pub(super) async fn count_devices(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM devices")
            .fetch_one(&self.read)
            .await?)
    }

    pub(super) async fn get_certificate(
        &self,
        serial: &str,
    ) -> Result<Option<CertRow>, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_cert(&mut conn, serial).await
    }

    // ---- device transitions ----

    /// See `Store::apply_device_transition`.
    pub(super) async fn apply_device_transition<E, F>(
        &self,
        subject: TransitionSubject<'_>,
        at: i64,
        actor: &Actor,
        decide: F,
    ) -> Result<Result<Transition, E>, StoreError>
    where
        F: FnOnce(&Current) -> Result<LifecyclePlan, E>,
    {
        let mut tx = self.begin_write().await?;
        // Device row first, as everywhere else, so that concurrent changes cannot deadlock.
        let (dev, cert) = match subject {
            TransitionSubject::Device(client_id) => (lock_device(&mut tx, client_id).await?, None),
            TransitionSubject::Certificate(serial) => {
                let device_id: i64 =
                    sqlx::query_scalar("SELECT device_id FROM certificates WHERE serial = $1")
                        .bind(serial)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                let dev = lock_device_by_id(&mut tx, device_id).await?;
                let cert = load_cert(&mut tx, serial)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                (dev, Some(cert))
            }
        };
        let current = Current {
            device: dev.status,
            certificate: cert.as_ref().map(|c| c.status),
        };
        let change = match decide(&current) {
            Err(e) => return Ok(Err(e)),
            Ok(LifecyclePlan::Unchanged) => {
                let device = load_device_by_id(&mut tx, dev.id).await?;
                return Ok(Ok(Transition {
                    device,
                    certificate: cert,
                    entry: None,
                }));
            }
            Ok(LifecyclePlan::Change(change)) => change,
        };
        let (target, serial) = match subject {
            TransitionSubject::Device(client_id) => (client_id, None),
            TransitionSubject::Certificate(serial) => (serial, Some(serial)),
        };
        let certs = &change.certificates;
        let which = match (certs.scope, serial) {
            (CertScope::Device, _) => "device_id = $4",
            (CertScope::Subject, Some(_)) => "serial = $4",
            (CertScope::Subject, None) => {
                return Err(StoreError::InvalidTransition(
                    "a change of the certificate named needs a certificate".into(),
                ))
            }
        };
        let sql = format!(
            "UPDATE certificates SET status = $1, revoked_at = $2, reason = $3 \
             WHERE {which} AND status IN ({}) RETURNING serial",
            placeholders(true, certs.from.len(), 5)
        );
        let mut q = sqlx::query_scalar(&sql)
            .bind(certs.to.as_str())
            .bind(certs.reason.map(|_| at))
            .bind(certs.reason.map(|r| r.as_str()));
        q = match (certs.scope, serial) {
            (CertScope::Subject, Some(s)) => q.bind(s),
            _ => q.bind(dev.id),
        };
        for s in certs.from {
            q = q.bind(s.as_str());
        }
        let mut serials: Vec<String> = q.fetch_all(&mut *tx).await?;
        serials.sort();
        if change.compromise_keys {
            let of = match (certs.scope, serial) {
                (CertScope::Subject, Some(s)) => KeysOf::Certificate(s),
                _ => KeysOf::Device(dev.id),
            };
            mark_keys_compromised(&mut tx, of, at).await?;
        }
        if let Some(d) = change.device {
            match d.revocation {
                Some(reason) => sqlx::query(
                    "UPDATE devices SET status = $1, revoked_at = $2, reason = $3 WHERE id = $4",
                )
                .bind(d.status.as_str())
                .bind(at)
                .bind(reason.as_str())
                .bind(dev.id),
                None => sqlx::query("UPDATE devices SET status = $1 WHERE id = $2")
                    .bind(d.status.as_str())
                    .bind(dev.id),
            }
            .execute(&mut *tx)
            .await?;
        }
        let entry = append_feed(
            &mut tx,
            change.feed.scope,
            change.feed.action,
            &dev.client_id,
            serials,
            change.feed.reason,
            at,
        )
        .await?;
        let audit = AuditRecord {
            detail: change.audit_detail,
            ..audit_ok(actor, change.audit_action, target, at)
        };
        insert_audit_on(&mut tx, &audit).await?;
        let device = load_device_by_id(&mut tx, dev.id).await?;
        let certificate = match serial {
            Some(s) => Some(load_cert(&mut tx, s).await?.ok_or(StoreError::NotFound)?),
            None => None,
        };
        tx.commit().await?;
        Ok(Ok(Transition {
            device,
            certificate,
            entry: Some(entry),
        }))
    }

    // ---- feed ----

    pub(super) async fn feed_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<(Vec<FeedEntryRow>, i64), StoreError> {
        // One statement, so the entries and the head come from one snapshot on both backends
        // (a page shorter than `limit` ends at the head). The head row is always there; with
        // no entry after `since` its entry columns are NULL.
        let sql = format!(
            "SELECT h.head, f.* FROM (SELECT COALESCE(MAX(seq), 0) AS head FROM feed) AS h \
             LEFT JOIN (SELECT {FEED_COLS} FROM feed WHERE seq > $1 ORDER BY seq LIMIT $2) AS f \
             ON 1 = 1 ORDER BY f.seq"
        );
        let rows = sqlx::query(&sql)
            .bind(since)
            .bind(clamp_limit(limit))
            .fetch_all(&self.read)
            .await?;
        let mut head = 0;
        let mut entries = Vec::with_capacity(rows.len());
        for r in &rows {
            head = r.try_get("head")?;
            if r.try_get::<Option<i64>, _>("seq")?.is_some() {
                entries.push(feed_from_row(r)?);
            }
        }
        Ok((entries, head))
    }

    pub(super) async fn feed_head(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
            .fetch_one(&self.read)
            .await?)
    }

    // ---- CRL ----

    pub(super) async fn crl_listing(&self) -> Result<Vec<CrlListing>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, status, reason, COALESCE(revoked_at, created_at) AS revoked_at \
             FROM certificates WHERE status <> 'good' ORDER BY serial",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let status = parse_cert_state(&r.try_get::<String, _>("status")?)?;
                let reason = parse_reason(r.try_get("reason")?)?;
                let reason_code = match status {
                    CertState::Hold => RevocationReason::CertificateHold.code(),
                    _ => reason.map_or(0, |r| r.code()),
                };
                Ok(CrlListing {
                    serial: r.try_get("serial")?,
                    revoked_at: r.try_get("revoked_at")?,
                    reason_code,
                })
            })
            .collect()
    }

    pub(super) async fn crl_get(&self) -> Result<Option<CrlRow>, StoreError> {
        let row = sqlx::query(
            "SELECT number, feed_head, der, this_update, next_update FROM crl WHERE id = 1",
        )
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(CrlRow {
                number: r.try_get("number")?,
                feed_head: r.try_get("feed_head")?,
                der: r.try_get("der")?,
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
            })
        })
        .transpose()
    }

    pub(super) async fn crl_put(
        &self,
        row: &CrlRow,
        expected_previous_number: Option<i64>,
    ) -> Result<bool, StoreError> {
        let q = match expected_previous_number {
            None => sqlx::query(
                "INSERT INTO crl (id, number, feed_head, der, this_update, next_update) \
                 VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            ),
            Some(_) => sqlx::query(
                "UPDATE crl SET number = $1, feed_head = $2, der = $3, this_update = $4, \
                 next_update = $5 WHERE id = 1 AND number = $6 AND number < $1",
            ),
        };
        let mut q = q
            .bind(row.number)
            .bind(row.feed_head)
            .bind(&row.der)
            .bind(row.this_update)
            .bind(row.next_update);
        if let Some(prev) = expected_previous_number {
            q = q.bind(prev);
        }
        Ok(q.execute(&self.write).await?.rows_affected() == 1)
    }

    // ---- audit ----

    pub(super) async fn insert_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        insert_audit_on(&mut conn, rec).await
    }

    pub(super) async fn list_audit(
        &self,
        since: Option<i64>,
        actor: Option<&str>,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let mut q =
            sqlx::QueryBuilder::<Db>::new(format!("SELECT {AUDIT_COLS} FROM audit WHERE id > "));
        q.push_bind(after_id.unwrap_or(0));
        if let Some(t) = since {
            q.push(" AND at >= ").push_bind(t);
        }
        if let Some(a) = actor {
            q.push(" AND (actor_id = ").push_bind(a);
            q.push(" OR actor_name = ").push_bind(a).push(")");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(clamp_limit(limit));
        let rows = q.build().fetch_all(&self.read).await?;
        rows.iter().map(audit_from_row).collect()
    }

    // ---- connection events, per-device and per-model policy ----

    pub(super) async fn record_events(&self, events: &[DeviceEvent]) -> Result<usize, StoreError> {
        // Fold the events per ClientID first: one row per device in one UPDATE ... FROM VALUES.
        #[derive(Default)]
        struct Agg {
            seen: Option<(i64, Option<String>)>,
            connects: i64,
            failures: i64,
            last_failure: Option<i64>,
        }
        let mut per: HashMap<&str, Agg> = HashMap::new();
        for e in events {
            let a = per.entry(e.client_id.as_str()).or_default();
            if e.auth_failure {
                a.failures += 1;
                a.last_failure = Some(a.last_failure.map_or(e.at, |t| t.max(e.at)));
            } else {
                a.connects += 1;
                if a.seen.as_ref().is_none_or(|(t, _)| e.at >= *t) {
                    a.seen = Some((e.at, e.address.clone()));
                }
            }
        }
        let per: Vec<(&str, Agg)> = per.into_iter().collect();
        const COLS: usize = 6;
        let mut applied = 0;
        let mut tx = self.begin_write().await?;
        for chunk in per.chunks(MAX_BINDS / COLS) {
            let sql = format!(
                "UPDATE devices SET \
                 last_seen = CASE WHEN v.column2 IS NOT NULL AND (devices.last_seen IS NULL OR v.column2 >= devices.last_seen) THEN v.column2 ELSE devices.last_seen END, \
                 last_address = CASE WHEN v.column2 IS NOT NULL AND (devices.last_seen IS NULL OR v.column2 >= devices.last_seen) THEN v.column3 ELSE devices.last_address END, \
                 connect_count = devices.connect_count + v.column4, \
                 auth_failure_count = devices.auth_failure_count + v.column5, \
                 last_auth_failure = CASE WHEN v.column6 IS NOT NULL AND (devices.last_auth_failure IS NULL OR v.column6 > devices.last_auth_failure) THEN v.column6 ELSE devices.last_auth_failure END \
                 FROM (VALUES {}) AS v WHERE devices.client_id = v.column1",
                values_rows(NUMBERED_PARAMS, chunk.len(), COLS)
            );
            let mut q = sqlx::query(&sql).persistent(chunk.len() <= CACHE_MAX_ROWS);
            for (cid, a) in chunk {
                let (seen, addr) = match &a.seen {
                    Some((t, addr)) => (Some(*t), addr.clone()),
                    None => (None, None),
                };
                q = q
                    .bind(*cid)
                    .bind(seen)
                    .bind(addr)
                    .bind(a.connects)
                    .bind(a.failures)
                    .bind(a.last_failure);
            }
            applied += q.execute(&mut *tx).await?.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(applied)
    }

    pub(super) async fn device_activity(
        &self,
        client_id: &str,
    ) -> Result<Option<DeviceActivity>, StoreError> {
        let row = sqlx::query(
            "SELECT last_seen, last_address, connect_count, auth_failure_count, last_auth_failure \
             FROM devices WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(DeviceActivity {
                last_seen: r.try_get("last_seen")?,
                last_address: r.try_get("last_address")?,
                connect_count: r.try_get("connect_count")?,
                auth_failure_count: r.try_get("auth_failure_count")?,
                last_auth_failure: r.try_get("last_auth_failure")?,
            })
        })
        .transpose()
    }

    pub(super) async fn get_device_policy(
        &self,
        client_id: &str,
    ) -> Result<Option<DevicePolicyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT allowed_cidrs, topic_policy, message_auth FROM devices WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let cidrs: Option<String> = r.try_get("allowed_cidrs")?;
            Ok(DevicePolicyRow {
                allowed_cidrs: cidrs
                    .map(|c| parse_json_list("allowed_cidrs", &c))
                    .transpose()?,
                topic_policy: r.try_get("topic_policy")?,
                message_auth: r.try_get("message_auth")?,
            })
        })
        .transpose()
    }

    pub(super) async fn change_device_policy(
        &self,
        client_id: &str,
        change: &DevicePolicyChange,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        let mut tx = self.begin_write().await?;
        // One statement: each field not named keeps the value the row has when the statement
        // runs (PostgreSQL re-reads a row changed meanwhile after waiting for its lock).
        let n = sqlx::query(
            "UPDATE devices SET \
             allowed_cidrs = CASE WHEN $1 THEN $2 ELSE allowed_cidrs END, \
             topic_policy = CASE WHEN $3 THEN $4 ELSE topic_policy END, \
             message_auth = CASE WHEN $5 THEN $6 ELSE message_auth END \
             WHERE client_id = $7",
        )
        .bind(change.allowed_cidrs.is_some())
        .bind(change.allowed_cidrs.clone().flatten().as_deref().map(json_list))
        .bind(change.topic_policy.is_some())
        .bind(change.topic_policy.clone().flatten())
        .bind(change.message_auth.is_some())
        .bind(change.message_auth.clone().flatten())
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit_on(&mut tx, audit).await?;
        let entry = append_feed(
            &mut tx,
            RevocationScope::Device,
            RevocationAction::Updated,
            client_id,
            Vec::new(),
            None,
            audit.at,
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
    }

    pub(super) async fn get_model(&self, name: &str) -> Result<Option<ModelRow>, StoreError> {
        let sql = format!("SELECT {MODEL_COLS} FROM models WHERE name = $1");
        match sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.read)
            .await?
        {
            Some(r) => Ok(Some(model_from_row(&r)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn list_models(&self) -> Result<Vec<ModelRow>, StoreError> {
        let sql = format!("SELECT {MODEL_COLS} FROM models ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
        rows.iter().map(model_from_row).collect()
    }

    pub(super) async fn put_model(
        &self,
        m: &ModelRow,
        audit: &AuditRecord,
    ) -> Result<FeedEntryRow, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO models (name, client_id_prefix, topic_policy, message_auth, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
             client_id_prefix = excluded.client_id_prefix, topic_policy = excluded.topic_policy, \
             message_auth = excluded.message_auth, updated_at = excluded.updated_at",
        )
        .bind(&m.name)
        .bind(&m.client_id_prefix)
        .bind(&m.topic_policy)
        .bind(&m.message_auth)
        .bind(m.updated_at)
        .execute(&mut *tx)
        .await?;
        insert_audit_on(&mut tx, audit).await?;
        let entry = append_feed(
            &mut tx,
            RevocationScope::Model,
            RevocationAction::Updated,
            &m.name,
            Vec::new(),
            None,
            audit.at,
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
    }
}
