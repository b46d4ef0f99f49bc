//! Group commit of single registrations: requests that arrive together share one transaction
//! (at most [`MAX_GROUP`] items, one transaction per actor), each answered on its own.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::domain::DomainError;
use crate::store::{Actor, NewDevice, RegConflict, RegMode, RegOutcome, Store};
use crate::timefmt;

/// Most single registrations stored in one shared transaction.
const MAX_GROUP: usize = 256;
/// Group committers sharing the queue on PostgreSQL.
pub(super) const POSTGRES_COMMITTERS: usize = 4;

/// The stored outcome, with the device handed back so the answer is built without a copy.
pub(super) type GroupReply = Result<(NewDevice, Result<RegOutcome, RegConflict>), DomainError>;

pub(super) struct GroupItem {
    pub(super) actor: Actor,
    pub(super) device: NewDevice,
    pub(super) reply: oneshot::Sender<GroupReply>,
}

/// SQLite's group committer runs on a thread of its own (a current-thread runtime): each of
/// its commits waits for sqlx's SQLite worker thread, and on the shared async workers the
/// committer's wake-up would queue behind request handling (CSR checks, signatures, JSON), so
/// every commit, hence every registration, would wait longer. Its SQLite connection is driven by
/// sqlx's own worker thread, so it does not belong to any one runtime. The thread ends when the
/// registry (the queue's sender) is dropped.
pub(super) fn spawn_committer_thread(
    store: Store,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<GroupItem>>>,
) {
    spawn_on_own_thread("devid-committer", move || {
        group_committer(store.clone(), rx.clone())
    });
}

/// Runs the future `make` makes on a thread named `name` of its own, with a current-thread
/// runtime (a SQLite committer: see [`spawn_committer_thread`]); on the current runtime when no
/// thread can be had.
pub(crate) fn spawn_on_own_thread<F, Fut>(name: &str, make: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let make = Arc::new(make);
    let spawned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| {
            let make = make.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || rt.block_on(make()))
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, thread = name, "no thread of its own; running on the shared runtime");
        tokio::spawn(make());
    }
}

/// Stores whatever single registrations are waiting, one transaction per caller per round.
pub(super) async fn group_committer(
    store: Store,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<GroupItem>>>,
) {
    loop {
        // Take whatever is waiting (at least one item), then let the next committer take its
        // turn at the queue while this one stores.
        let mut pending = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { break };
            let mut pending = vec![first];
            while pending.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(item) => pending.push(item),
                    Err(_) => break,
                }
            }
            pending
        };
        // One transaction per actor: the store writes the audit rows with one actor per call.
        while !pending.is_empty() {
            let actor_id = pending[0].actor.id.clone();
            let (group, rest): (Vec<GroupItem>, Vec<GroupItem>) =
                pending.into_iter().partition(|i| i.actor.id == actor_id);
            pending = rest;
            let actor = group[0].actor.clone();
            let (devices, replies): (Vec<NewDevice>, Vec<_>) =
                group.into_iter().map(|g| (g.device, g.reply)).unzip();
            let started = Instant::now();
            let result = store
                .register(&devices, RegMode::Independent, &actor, timefmt::now())
                .await;
            tracing::debug!(items = devices.len(), took = ?started.elapsed(), "group committed");
            match result {
                Ok(outcomes) => {
                    for ((device, reply), outcome) in devices.into_iter().zip(replies).zip(outcomes)
                    {
                        let _ = reply.send(Ok((device, outcome)));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(DomainError::internal(&message)));
                    }
                }
            }
        }
    }
}
