//! The delivery worker: POSTs each pending delivery to its target as JSON, signed, at least once,
//! in order per object key; a failure is retried with exponential backoff and jitter until the
//! delivery is older than the configured maximum age, then it is dead (`postgate events retry`
//! puts it back).
//!
//! Signature: `X-Postgate-Timestamp: <unix seconds>` and
//! `X-Postgate-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. A receiver
//! recomputes it over the raw body, compares in constant time, and refuses a timestamp far from
//! its clock (a replay).
//!
//! Batches: a target declared with `--batch N` gets up to N records in one POST when several of
//! its deliveries are due at once (`Records` in the order they fell due, at most one per object
//! key, so a key's order holds); `X-Postgate-Delivery` then lists their ids, comma-separated, in
//! that order. The POST's outcome is each record's. One due alone goes alone: batching adds no
//! wait.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Notifier, message};
use crate::db::Db;
use crate::db::events::{self, Delivery, Outcome};

pub const TIMESTAMP_HEADER: &str = "x-postgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-postgate-signature";
/// The ids of the POST's deliveries (one, or a batch's, comma-separated): each the same on every
/// retry, so a receiver can drop a duplicate.
const DELIVERY_HEADER: &str = "x-postgate-delivery";

/// POSTs in flight at once per target (different keys; a key's are in order), each of up to
/// the target's batch of records; the shared worker's, in all.
pub(super) const WINDOW: usize = 32;
// A read from the start takes the window's rows and those in flight (at most as many again).
const _: () = assert!(2 * WINDOW * crate::config::MAX_WEBHOOK_BATCH as usize <= events::MAX_DUE);
/// After an attempt ends, how long its lane waits for others to end before recording them all.
pub(super) const GATHER: Duration = Duration::from_millis(5);
/// How often the worker looks for targets without a lane among the declared ones.
const LANES_EVERY: Duration = POLL;
/// How often it looks among the targets pending deliveries name (a scan of the pending ones).
const SCAN_EVERY: Duration = Duration::from_secs(60);
/// The outbox is read this often even without a wake-up (one arrives with each new event).
const POLL: Duration = Duration::from_millis(250);
/// While attempts are in flight, a lane reads its queue from the start this often (otherwise
/// from the last row it took).
const REREAD_EVERY: Duration = Duration::from_secs(2);
/// One attempt's limit: connect, send, and the receiver's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How much of a receiver's answer is read (and dropped), so that its connection is kept.
const ANSWER_LIMIT: usize = 64 * 1024;

/// The deliveries' HTTP client: HTTP/1.1 with keep-alive, over TLS for an https target.
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// `v1=<hex>`: the HMAC-SHA256 of `"<timestamp>.<body>"` with the target's secret.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    sign_with(&signing_key(secret), timestamp, body)
}

/// The HMAC key of `secret`. Made once per target when the targets are read
/// ([`super::Notifier::reload`]), not per delivery: it hashes the key's two pads.
pub(super) fn signing_key(secret: &str) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes())
}

/// [`sign`] with the target's key made beforehand.
fn sign_with(key: &ring::hmac::Key, timestamp: i64, body: &str) -> String {
    let mut mac = ring::hmac::Context::with_key(key);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.sign().as_ref()))
}

pub(super) struct Worker {
    pub(super) notifier: Notifier,
    db: Db,
    metrics: Arc<crate::telemetry::Metrics>,
    client: HttpClient,
    /// One attempt's limit ([`ATTEMPT_TIMEOUT`], or less: [`Worker::within`]).
    attempt_timeout: Duration,
}

/// The client: hyper's pooled client, without the layers a general one adds per request (URL
/// parsing and re-serialising, proxy matching, the redirect and retry services), which cost a
/// delivery more than building and signing its body. It follows no redirect (hyper's does not:
/// a 3xx is a failed attempt, as a redirect would send the signed event somewhere the operator
/// did not declare); [`ATTEMPT_TIMEOUT`] bounds connecting, and each attempt as a whole
/// ([`Worker::attempt`]). https targets are verified against the platform's roots.
fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
        .expect("the platform's TLS roots load")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

impl Worker {
    pub(super) fn new(
        notifier: Notifier,
        db: Db,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Worker {
        Worker {
            notifier,
            db,
            metrics,
            client: client(),
            attempt_timeout: ATTEMPT_TIMEOUT,
        }
    }

    /// Cuts each attempt at `limit` when that is below [`ATTEMPT_TIMEOUT`].
    pub(super) fn within(mut self, limit: Duration) -> Worker {
        self.attempt_timeout = self.attempt_timeout.min(limit);
        self
    }

    /// The most records one POST to `target` carries (1 for a target no longer declared).
    pub(super) fn batch(&self, target: &str) -> usize {
        self.notifier.signer(target).map_or(1, |s| s.batch)
    }

    /// Counts an attempt's outcome in the metrics.
    pub(super) fn count(&self, outcome: &Outcome) {
        self.metrics.event_delivery(match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "failed",
            Outcome::Dead { .. } => "dead",
        });
    }

    /// Starts a delivery lane for every target (declared, or named by a pending delivery: a
    /// target removed since its events were written still gets its deliveries retried and marked
    /// dead).
    pub(super) async fn run(self) {
        let worker = Arc::new(self);
        let mut lanes: HashSet<String> = HashSet::new();
        let mut last_scan = 0;
        loop {
            let now = crate::db::now_millis();
            let mut names: Vec<String> = worker
                .notifier
                .targets()
                .into_iter()
                .map(|t| t.name)
                .collect();
            if now - last_scan >= SCAN_EVERY.as_millis() as i64 {
                last_scan = now;
                match worker.db.read(events::pending_targets).await {
                    Ok(pending) => names.extend(pending),
                    Err(crate::db::DbError::WriterGone) => return,
                    Err(e) => tracing::warn!(error = %e, "could not read the event outbox"),
                }
            }
            for name in names {
                if lanes.insert(name.clone()) {
                    tokio::spawn(worker.clone().lane(name));
                }
            }
            tokio::time::sleep(LANES_EVERY).await;
        }
    }

    /// One target's deliveries: up to [`WINDOW`] POSTs in flight (each of up to the target's
    /// batch of records), each slot refilled as its attempt ends, so a slow or silent receiver
    /// holds back only its own events (other targets have lanes of their own) and, within its
    /// lane, only the slots its slow answers take. A key's later deliveries are parked while an
    /// earlier one is pending ([`Keys`]), so a receiver sees a key's events in order (and a batch
    /// holds at most one of a key's).
    async fn lane(self: Arc<Self>, target: String) {
        let mut wake = self.notifier.wake(&target);
        let mut keys = loop {
            let t = target.clone();
            match self.db.read(move |c| events::pending_of(c, &t)).await {
                Ok(rows) => {
                    let (keys, park, unpark) = Keys::rebuild(rows);
                    if self.write_parking(park, unpark).await.is_ok() {
                        break keys;
                    }
                }
                Err(crate::db::DbError::WriterGone) => return,
                Err(e) => tracing::warn!(error = %e, "could not read the event outbox"),
            }
            tokio::time::sleep(POLL).await;
        };
        let mut in_flight = FuturesUnordered::new();
        let mut ids: HashSet<i64> = HashSet::new();
        // The last row taken (next_at, id): while attempts are in flight, reads start after it,
        // so that each new event does not read those in flight (and their records) again. A
        // row that sorts before it and was not taken (unparked in the same millisecond, a
        // clock step back) is read when nothing is in flight, or at the latest after
        // `REREAD_EVERY`.
        let mut after: Option<(i64, i64)> = None;
        let mut from_start = tokio::time::Instant::now();
        loop {
            if ids.is_empty() || from_start.elapsed() >= REREAD_EVERY {
                after = None;
                from_start = tokio::time::Instant::now();
            }
            if in_flight.len() < WINDOW {
                let now = crate::db::now_millis();
                let batch = self.batch(&target);
                let room = (WINDOW - in_flight.len()) * batch;
                // From the start, those in flight are read too (still pending): skipped here.
                let limit = match after {
                    Some(_) => room,
                    None => room + ids.len(),
                };
                let t = target.clone();
                match self
                    .db
                    .read(move |c| events::due(c, &t, now, after, limit))
                    .await
                {
                    Ok(due) => {
                        let mut park = Vec::new();
                        let mut taken = Vec::new();
                        for d in due {
                            if taken.len() >= room {
                                break;
                            }
                            after = Some((d.next_at, d.id));
                            if ids.contains(&d.id) {
                                continue;
                            }
                            let key = (d.bucket.clone(), d.key.clone());
                            if !keys.take(&key, d.id) {
                                park.push(d.id);
                                continue;
                            }
                            ids.insert(d.id);
                            taken.push(d);
                        }
                        for rows in posts(taken, batch) {
                            let worker = self.clone();
                            in_flight.push(async move {
                                let outcomes = worker.attempt(&rows).await;
                                rows.into_iter()
                                    .zip(outcomes)
                                    .map(|(d, o)| (d.id, (d.bucket, d.key), o))
                                    .collect::<Vec<_>>()
                            });
                        }
                        if !park.is_empty() && self.write_parking(park, Vec::new()).await.is_err() {
                            return;
                        }
                    }
                    Err(crate::db::DbError::WriterGone) => return,
                    Err(e) => tracing::warn!(error = %e, "could not read the event outbox"),
                }
            }
            let mut done = Vec::new();
            tokio::select! {
                Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                    done.extend(first);
                    // The attempts sent with it end at about the same time: one write records
                    // them all (the writer thread is the uploads' too).
                    let until = tokio::time::Instant::now() + GATHER;
                    while let Ok(Some(more)) =
                        tokio::time::timeout_at(until, in_flight.next()).await
                    {
                        done.extend(more);
                    }
                }
                changed = wake.changed(), if in_flight.len() < WINDOW => {
                    if changed.is_err() {
                        return;
                    }
                    // Let the transaction that woke us commit before reading.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            if done.is_empty() {
                continue;
            }
            for (_, _, outcome) in &done {
                self.count(outcome);
            }
            // A key whose pending delivery is over hands its turn to the next one parked.
            let ended: Vec<((String, String), i64)> = done
                .iter()
                .filter(|(_, _, o)| !matches!(o, Outcome::Retry { .. }))
                .map(|(id, key, _)| (key.clone(), *id))
                .collect();
            let unpark: Vec<i64> = ended
                .iter()
                .filter_map(|(key, id)| keys.next_after(key, *id))
                .collect();
            let outcomes: Vec<(i64, Outcome)> =
                done.iter().map(|(id, _, o)| (*id, o.clone())).collect();
            let written = self
                .db
                .write(move |c| {
                    events::record_outcomes(c, &outcomes)?;
                    for id in &unpark {
                        events::unpark(c, *id)?;
                    }
                    Ok(())
                })
                .await;
            match written {
                Ok(()) => {
                    for (key, id) in &ended {
                        keys.end(key, *id);
                    }
                }
                Err(crate::db::DbError::WriterGone) => return,
                Err(e) => {
                    // Still pending in the outbox: taken again once due.
                    tracing::warn!(error = %e, "could not record delivery outcomes");
                    tokio::time::sleep(POLL).await;
                }
            }
            for (id, _, _) in done {
                ids.remove(&id);
            }
        }
    }

    /// Parks and unparks rows in one write; `Err` only when the writer is gone (another error
    /// is logged: a row left unparked is parked again when next read).
    async fn write_parking(&self, park: Vec<i64>, unpark: Vec<i64>) -> Result<(), ()> {
        if park.is_empty() && unpark.is_empty() {
            return Ok(());
        }
        let written = self
            .db
            .write(move |c| {
                for id in &park {
                    events::park(c, *id)?;
                }
                for id in &unpark {
                    events::unpark(c, *id)?;
                }
                Ok(())
            })
            .await;
        match written {
            Ok(()) => Ok(()),
            Err(crate::db::DbError::WriterGone) => Err(()),
            Err(e) => {
                tracing::warn!(error = %e, "could not park deliveries");
                Ok(())
            }
        }
    }

    /// POSTs one signed body; `Err`: why the attempt failed (a receiver's non-2xx answer, or
    /// the error, without the URL: it may hold a token).
    async fn post(
        &self,
        url: &str,
        timestamp: i64,
        signature: &str,
        ids: &str,
        body: String,
    ) -> Result<(), String> {
        let request = hyper::Request::post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("postgate/", env!("CARGO_PKG_VERSION"))),
            )
            .header(HeaderName::from_static(TIMESTAMP_HEADER), timestamp)
            .header(HeaderName::from_static(SIGNATURE_HEADER), signature)
            .header(HeaderName::from_static(DELIVERY_HEADER), ids)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| "could not deliver: the target's URL is not valid".to_owned())?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("could not deliver: {}", describe(&e)))?;
        let status = answer.status();
        // Read to its end (a small one), so that the connection goes back to the pool.
        let _ = Limited::new(answer.into_body(), ANSWER_LIMIT)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", status.as_u16()))
        }
    }

    /// One attempt at deliveries of one target, in one POST (one record each, in this order,
    /// at most one per object key); each one's outcome, in the same order.
    pub(super) async fn attempt(&self, rows: &[Delivery]) -> Vec<Outcome> {
        let Some(first) = rows.first() else {
            return Vec::new();
        };
        let error = match self.notifier.signer(&first.target) {
            None => format!("no webhook target named {}", first.target),
            Some(target) => {
                let bodies = rows.iter().map(|d| match &d.record {
                    // Written before migration 0017: its rendered body, sent as it was.
                    Some(stored) => message::send_body(stored, &d.configuration_id, d.id),
                    None => message::render(&self.notifier.inner.region, d),
                });
                let body = message::join(bodies);
                let ids = rows
                    .iter()
                    .map(|d| d.id.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
                let signature = sign_with(&target.key, timestamp, &body);
                match tokio::time::timeout(
                    self.attempt_timeout,
                    self.post(&target.url, timestamp, &signature, &ids, body),
                )
                .await
                {
                    Ok(Ok(())) => return vec![Outcome::Delivered; rows.len()],
                    Ok(Err(e)) => e,
                    Err(_) => "could not deliver: timed out".to_owned(),
                }
            }
        };
        let now = crate::db::now_millis();
        let max_age = self.notifier.inner.max_age.as_millis() as i64;
        rows.iter()
            .map(|d| {
                let error = error.clone();
                if now - d.since >= max_age {
                    tracing::warn!(delivery = d.id, target = %d.target, %error, "event delivery gave up");
                    return Outcome::Dead { error };
                }
                let wait = backoff(self.notifier.inner.retry_min, d.attempts);
                tracing::debug!(delivery = d.id, target = %d.target, %error, ?wait, "event delivery failed");
                Outcome::Retry {
                    error,
                    next_at: (now + wait.as_millis() as i64).min(d.since + max_age),
                }
            })
            .collect()
    }
}

/// `rows` as POSTs of up to `batch` records each, in order.
pub(super) fn posts(rows: Vec<Delivery>, batch: usize) -> Vec<Vec<Delivery>> {
    let mut rows = rows.into_iter().peekable();
    let mut posts = Vec::new();
    while rows.peek().is_some() {
        posts.push(rows.by_ref().take(batch.max(1)).collect());
    }
    posts
}

/// An error and its causes (hyper's own message is only "client error (Connect)"), without
/// the URL.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A lane's order per object key, in memory: for each key with a pending delivery, the one
/// whose turn it is (in flight, waiting for its retry, or due), and those parked behind it
/// (`next_at` = [`events::PARKED`] in the outbox, so that the lane's reads skip them), in id
/// order. Rebuilt from the pending rows when the lane starts; that is where rows from before
/// parking existed (or parked by a lane that stopped) get their turn or their place.
#[derive(Default)]
struct Keys {
    turns: HashMap<(String, String), Turn>,
}

struct Turn {
    id: i64,
    parked: VecDeque<i64>,
}

impl Keys {
    /// From `target`'s pending rows by id: the keys, the rows to park (due, behind an earlier
    /// one) and to unpark (parked, and now first of their key).
    fn rebuild(rows: Vec<events::PendingRow>) -> (Keys, Vec<i64>, Vec<i64>) {
        let (mut keys, mut park, mut unpark) = (Keys::default(), Vec::new(), Vec::new());
        for (id, bucket, key, next_at) in rows {
            match keys.turns.entry((bucket, key)) {
                Entry::Vacant(v) => {
                    v.insert(Turn {
                        id,
                        parked: VecDeque::new(),
                    });
                    if next_at == events::PARKED {
                        unpark.push(id);
                    }
                }
                Entry::Occupied(mut o) => {
                    o.get_mut().parked.push_back(id);
                    if next_at != events::PARKED {
                        park.push(id);
                    }
                }
            }
        }
        (keys, park, unpark)
    }

    /// Whether row `id`, read due, may be sent now: it is its key's turn, or its key has none
    /// (it takes it), or it is older than the turn (an operator's retry of a dead row: sent at
    /// once). `false`: it is parked behind the turn (the caller parks it in the outbox).
    fn take(&mut self, key: &(String, String), id: i64) -> bool {
        match self.turns.get_mut(key) {
            None => {
                self.turns.insert(
                    key.clone(),
                    Turn {
                        id,
                        parked: VecDeque::new(),
                    },
                );
                true
            }
            Some(turn) if turn.id >= id => true,
            Some(turn) => {
                if let Err(at) = turn.parked.binary_search(&id) {
                    turn.parked.insert(at, id);
                }
                false
            }
        }
    }

    /// The row to unpark when `id`, its key's turn, is over.
    fn next_after(&self, key: &(String, String), id: i64) -> Option<i64> {
        let turn = self.turns.get(key).filter(|t| t.id == id)?;
        turn.parked.front().copied()
    }

    /// `id` is delivered or dead (and recorded): its key's next row, if any, has the turn.
    fn end(&mut self, key: &(String, String), id: i64) {
        if let Entry::Occupied(mut o) = self.turns.entry(key.clone())
            && o.get().id == id
        {
            match o.get_mut().parked.pop_front() {
                Some(next) => o.get_mut().id = next,
                None => {
                    o.remove();
                }
            }
        }
    }
}

/// `min · 2^attempts`, at most [`MAX_BACKOFF`], with "equal jitter" (between half and all of
/// it) so that the retries of many failed deliveries spread out.
fn backoff(min: Duration, attempts: u32) -> Duration {
    let full = min
        .saturating_mul(1u32 << attempts.min(20))
        .min(MAX_BACKOFF);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let jitter = (full.as_millis() as u64 / 2).max(1);
    full - Duration::from_millis(random % jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = sign("secret", 1700000000, "{}");
        // HMAC-SHA256("secret", "1700000000.{}"), as the documented verifiers compute it.
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(b"secret").unwrap();
        hmac::Mac::update(&mut mac, b"1700000000.{}");
        let expected = hex::encode(hmac::Mac::finalize(mac).into_bytes());
        assert_eq!(s, format!("v1={expected}"));
        assert!(s.starts_with("v1=") && s.len() == 3 + 64);
        assert_ne!(s, sign("secret", 1700000001, "{}"));
        assert_ne!(s, sign("secret", 1700000000, "{ }"));
        assert_ne!(s, sign("other", 1700000000, "{}"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let min = Duration::from_secs(1);
        for attempts in 0..30 {
            let full = min.saturating_mul(1 << attempts.min(20)).min(MAX_BACKOFF);
            let b = backoff(min, attempts);
            assert!(b <= full && b >= full / 2, "{attempts}: {b:?}");
        }
    }

    /// A lane's key order: the first pending row of a key has its turn, later ones are parked
    /// (and those found due at start are parked, a parked first one unparked); when the turn
    /// ends, the next parked one has it.
    #[test]
    fn a_keys_later_rows_wait_for_its_turn() {
        let k = |s: &str| ("b".to_owned(), s.to_owned());
        let rows = vec![
            (1, "b".into(), "a".into(), 10),
            (2, "b".into(), "a".into(), 10),
            (3, "b".into(), "c".into(), events::PARKED),
            (4, "b".into(), "a".into(), events::PARKED),
        ];
        let (mut keys, park, unpark) = Keys::rebuild(rows);
        assert_eq!((park, unpark), (vec![2], vec![3]));
        assert!(keys.take(&k("a"), 1));
        assert!(!keys.take(&k("a"), 2));
        assert!(keys.take(&k("c"), 3));
        // A key without a turn: the row takes it; the next one waits.
        assert!(keys.take(&k("new"), 7));
        assert!(!keys.take(&k("new"), 8));
        assert_eq!(keys.next_after(&k("a"), 1), Some(2));
        keys.end(&k("a"), 1);
        assert!(keys.take(&k("a"), 2));
        assert!(!keys.take(&k("a"), 4));
        assert_eq!(keys.next_after(&k("a"), 2), Some(4));
        keys.end(&k("a"), 2);
        keys.end(&k("a"), 4);
        keys.end(&k("c"), 3);
        assert_eq!(keys.next_after(&k("new"), 7), Some(8));
        keys.end(&k("new"), 7);
        keys.end(&k("new"), 8);
        assert!(keys.turns.is_empty());
    }
}
