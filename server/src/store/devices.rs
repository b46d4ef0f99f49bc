//! Devices and certificates as they are read: one device with its certificates in one
//! statement (a LEFT JOIN), lists, counts.

use sqlx::FromRow;

use super::sql::{Arg, Conn, KeyColumn, Maybe, Stmt, Tx};
use super::types::{CERT_COLUMNS, GATEWAY_COLUMN};
use super::{clamp_limit, CertRow, DeviceFilter, DeviceRow, DeviceWithCerts, Store, StoreError};

/// A row of a device LEFT JOIN its certificates: the device, and one certificate or none.
#[derive(FromRow)]
pub(super) struct Joined {
    #[sqlx(flatten)]
    device: DeviceRow,
    #[sqlx(flatten)]
    cert: Maybe<CertRow>,
}

impl Joined {
    /// The statement's start; the caller adds `WHERE` (on `d`) and `ORDER BY d.id, c.id DESC`.
    pub fn select() -> String {
        format!(
            "SELECT d.*, {GATEWAY_COLUMN}, {CERT_COLUMNS} FROM devices d \
             LEFT JOIN certificates c ON c.device_id = d.id"
        )
    }
}

/// In a [`Joined`] row, a device without certificates has NULL certificate columns.
impl KeyColumn for CertRow {
    const KEY: &'static str = "serial";
}

/// Groups rows ordered by device (`ORDER BY d.id, c.id DESC`) into devices with certificates.
pub(super) fn assemble(rows: Vec<Joined>) -> Vec<DeviceWithCerts> {
    let mut out: Vec<DeviceWithCerts> = Vec::new();
    for Joined { device, cert } in rows {
        if out.last().map(|d| d.device.id) != Some(device.id) {
            out.push(DeviceWithCerts {
                device,
                certs: Vec::new(),
            });
        }
        if let (Some(cert), Some(last)) = (cert.0, out.last_mut()) {
            last.certs.push(cert);
        }
    }
    out
}

/// A unique column of `devices` and its value.
#[derive(Debug, Clone, Copy)]
pub(super) enum DeviceKey<'a> {
    Id(i64),
    ClientId(&'a str),
    HardwareSerial(&'a str),
}

impl<'a> DeviceKey<'a> {
    fn column(self) -> &'static str {
        match self {
            DeviceKey::Id(_) => "id",
            DeviceKey::ClientId(_) => "client_id",
            DeviceKey::HardwareSerial(_) => "hardware_serial",
        }
    }

    fn arg(self) -> Arg<'a> {
        match self {
            DeviceKey::Id(id) => id.into(),
            DeviceKey::ClientId(s) | DeviceKey::HardwareSerial(s) => s.into(),
        }
    }
}

/// One device with its certificates, newest first.
pub(super) async fn load_device(
    conn: Conn<'_>,
    key: DeviceKey<'_>,
) -> Result<Option<DeviceWithCerts>, StoreError> {
    let rows: Vec<Joined> = Stmt::new(Joined::select())
        .push(&format!(
            " WHERE d.{} = $1 ORDER BY d.id, c.id DESC",
            key.column()
        ))
        .bind(key.arg())
        .fetch_all(conn)
        .await?;
    Ok(assemble(rows).into_iter().next())
}

/// Takes the device's row lock (PostgreSQL; SQLite's write transaction holds the database's)
/// and returns the row.
pub(super) async fn lock_device(tx: &mut Tx, key: DeviceKey<'_>) -> Result<DeviceRow, StoreError> {
    let sql = format!(
        "SELECT * FROM devices WHERE {} = $1{}",
        key.column(),
        tx.dialect().for_update()
    );
    Stmt::new(sql)
        .bind(key.arg())
        .fetch_optional(tx)
        .await?
        .ok_or(StoreError::NotFound)
}

pub(super) async fn load_cert(conn: Conn<'_>, serial: &str) -> Result<Option<CertRow>, StoreError> {
    Ok(Stmt::new(format!(
        "SELECT {CERT_COLUMNS} FROM certificates c JOIN devices d ON d.id = c.device_id \
         WHERE c.serial = $1"
    ))
    .bind(serial)
    .fetch_optional(conn)
    .await?)
}

impl Store {
    /// A device and its certificates, newest first.
    pub async fn get_device(&self, client_id: &str) -> Result<Option<DeviceWithCerts>, StoreError> {
        let mut conn = self.pools.read().await?;
        load_device(Conn::from(&mut conn), DeviceKey::ClientId(client_id)).await
    }

    /// The device registered under a hardware serial.
    pub async fn get_device_by_serial(
        &self,
        hardware_serial: &str,
    ) -> Result<Option<DeviceWithCerts>, StoreError> {
        let mut conn = self.pools.read().await?;
        load_device(
            Conn::from(&mut conn),
            DeviceKey::HardwareSerial(hardware_serial),
        )
        .await
    }

    pub async fn hardware_serial_exists(&self, hardware_serial: &str) -> Result<bool, StoreError> {
        self.exists("hardware_serial", hardware_serial).await
    }

    pub async fn client_id_exists(&self, client_id: &str) -> Result<bool, StoreError> {
        self.exists("client_id", client_id).await
    }

    async fn exists(&self, column: &str, value: &str) -> Result<bool, StoreError> {
        let (n,): (i64,) = Stmt::new(format!("SELECT COUNT(*) FROM devices WHERE {column} = $1"))
            .bind(value)
            .fetch_one(&mut self.pools.read().await?)
            .await?;
        Ok(n > 0)
    }

    /// Devices with id > `after_id`, ordered by id, at most `limit` (0 means 100; capped at
    /// 10,000). `created_after` is exclusive.
    pub async fn list_devices(&self, f: &DeviceFilter) -> Result<Vec<DeviceRow>, StoreError> {
        let prefix = f.prefix.as_ref().map(|p| (p.as_str(), p.upper_bound()));
        // With a search, `+d.id` keeps SQLite from walking the whole table in id order to
        // find a rare match: it reads the two index ranges and sorts what they hold
        // (PostgreSQL's planner does so by itself: a BitmapOr of the two indexes).
        let id = if prefix.is_some() { "+d.id" } else { "d.id" };
        let mut q = Stmt::new(format!(
            "SELECT d.*, {GATEWAY_COLUMN} FROM devices d WHERE {id} > "
        ))
        .push_bind(f.after_id.unwrap_or(0));
        if let Some(s) = f.status {
            q = q.push(" AND d.status = ").push_bind(s.as_str());
        }
        if let Some(k) = f.kind {
            q = q.push(" AND d.kind = ").push_bind(k.as_str());
        }
        if let Some(m) = &f.model {
            q = q.push(" AND d.model = ").push_bind(m.as_str());
        }
        if let Some(t) = f.created_after {
            q = q.push(" AND d.created_at > ").push_bind(t);
        }
        if let Some((lo, hi)) = &prefix {
            // A range on each unique column (client_id, hardware_serial), so each side is an
            // index range scan on both backends; `SearchPrefix::upper_bound` makes the range
            // exactly the strings starting with the prefix in byte order (SQLite's BINARY,
            // PostgreSQL's C and C.UTF-8 collations).
            q = q
                .push(" AND ((d.client_id >= ")
                .push_bind(*lo)
                .push(" AND d.client_id < ")
                .push_bind(hi)
                .push(") OR (d.hardware_serial >= ")
                .push_bind(*lo)
                .push(" AND d.hardware_serial < ")
                .push_bind(hi)
                .push("))");
        }
        let rows = q
            .push(" ORDER BY d.id LIMIT ")
            .push_bind(clamp_limit(f.limit))
            .fetch_all(&mut self.pools.read().await?)
            .await?;
        Ok(rows)
    }

    pub async fn count_devices(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = Stmt::new("SELECT COUNT(*) FROM devices")
            .fetch_one(&mut self.pools.read().await?)
            .await?;
        Ok(n)
    }

    pub async fn get_certificate(&self, serial: &str) -> Result<Option<CertRow>, StoreError> {
        let mut conn = self.pools.read().await?;
        load_cert(Conn::from(&mut conn), serial).await
    }
}
