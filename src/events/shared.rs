//! The delivery worker of the shared outbox (`--control-db`): every node runs one. It takes due
//! rows under a lease (`control::Pg::take_events`: no other node takes them while it lasts, and
//! a key's row only once the earlier ones of its key are over), sends them with the same
//! signing, message, batches and backoff as this node's own outbox ([`Worker::attempt`]; a
//! batch gathers the rows of a target taken in one read, at most [`WINDOW`]), cut at half
//! the lease so that the lease never runs out during a live attempt, and records the outcomes
//! (only while it holds the rows). A node that stops holding rows leaves them to the others once
//! their lease ran out. Woken by `NOTIFY` on each insert, and polls every second as the bound.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::deliver::{GATHER, WINDOW, Worker, posts};
use crate::control::Pg;
use crate::control::pg::OUTBOX_CHANNEL;
use crate::db::events::Delivery;

/// The shared outbox is read this often without a notification.
const POLL: Duration = Duration::from_secs(1);
/// How often delivered rows past the retry window are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn run(worker: Worker, pg: Pg, lease: Duration) {
    let worker = Arc::new(worker.within(lease / 2));
    let max_age = worker.notifier.inner.max_age;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (listener, woken) = (pg.clone(), wake.clone());
    tokio::spawn(async move { listener.listen(OUTBOX_CHANNEL, || woken.notify_one()).await });
    let mut in_flight = FuturesUnordered::new();
    let mut pruned = tokio::time::Instant::now();
    loop {
        if in_flight.len() < WINDOW {
            let room = (WINDOW - in_flight.len()) as i64;
            match pg.take_events(crate::db::now_millis(), room, lease).await {
                Ok(taken) => {
                    for rows in batches(&worker, taken) {
                        let worker = worker.clone();
                        in_flight.push(async move {
                            let outcomes = worker.attempt(&rows).await;
                            rows.iter().map(|d| d.id).zip(outcomes).collect::<Vec<_>>()
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read the shared event outbox"),
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            let before = crate::db::now_millis() - max_age.as_millis() as i64;
            if let Err(e) = pg.prune_events(before).await {
                tracing::warn!(error = %e, "could not prune the shared event outbox");
            }
        }
        let mut done = Vec::new();
        tokio::select! {
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                done.extend(first);
                let until = tokio::time::Instant::now() + GATHER;
                while let Ok(Some(more)) = tokio::time::timeout_at(until, in_flight.next()).await {
                    done.extend(more);
                }
            }
            _ = wake.notified(), if in_flight.len() < WINDOW => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        if done.is_empty() {
            continue;
        }
        for (_, outcome) in &done {
            worker.count(outcome);
        }
        // Not recorded (PostgreSQL unreachable): the rows are taken again once their lease
        // ran out, and sent again (at least once).
        if let Err(e) = pg.record_events(&done).await {
            tracing::warn!(error = %e, "could not record delivery outcomes in the shared outbox");
        }
    }
}

/// The rows taken, as POSTs: by target, in the order taken, up to each target's batch (the
/// rows taken are each their key's turn, so a batch holds at most one of a key's).
fn batches(worker: &Worker, taken: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut by_target: Vec<(String, Vec<Delivery>)> = Vec::new();
    for d in taken {
        match by_target.iter_mut().find(|(t, _)| *t == d.target) {
            Some((_, rows)) => rows.push(d),
            None => by_target.push((d.target.clone(), vec![d])),
        }
    }
    by_target
        .into_iter()
        .flat_map(|(target, rows)| posts(rows, worker.batch(&target)))
        .collect()
}
