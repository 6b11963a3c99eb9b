//! The metadata store: SQLite in WAL mode with one writer thread and a small pool of readers.
//!
//! Writes are group-committed: the writer thread takes every job that is queued, runs each inside
//! its own SAVEPOINT (so one failing job does not undo its neighbours) and commits them all with a
//! single WAL fsync (`synchronous=FULL`). A job's caller is answered only after that commit, so an
//! answer always means durable. Readers run on tokio's blocking pool, never on async workers.

pub mod buckets;
pub mod events;
pub mod keys;
pub mod lifecycle;
pub mod links;
mod migrate;
pub mod objects;
pub mod quota;
pub mod uploads;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use prometheus_client::metrics::histogram::Histogram;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// How many queued jobs one transaction may take: enough to amortise the fsync, few enough that
/// a batch's latency stays low.
const MAX_BATCH: usize = 512;
/// Read connections: at most this many reads run at once, each on a connection of its own that
/// is kept for the next read. A bound, rather than one connection per concurrent request, keeps
/// connections (and their parsed schema and cached statements) alive under load instead of
/// opening and closing one per read.
const READERS: usize = 8;
/// A WAL longer than this is emptied by the next checkpoint (see `checkpoint_loop`). Half the
/// 64 MiB the WAL must stay under: between two checkpoints (250 ms) full-speed small uploads add
/// a few MiB more, and a run of 4 KiB uploads at 64 connections peaked at 67.5 MiB with 64 MiB here.
const WAL_TRUNCATE_AT: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("database file: {0}")]
    File(#[from] std::io::Error),
}

impl DbError {
    /// SQLite could not grow the database or its WAL: the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, DbError::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

type Completion = Box<dyn FnOnce(Result<(), DbError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    read_slots: tokio::sync::Semaphore,
    stop: Arc<AtomicBool>,
    /// Jobs per group commit, observed by the writer thread (served by `/-/metrics`).
    batch_sizes: Histogram,
}

impl Drop for DbInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Statements kept prepared per connection (more than postgate has).
const STATEMENT_CACHE: usize = 256;

/// Opens a connection with the PRAGMAs every connection needs.
pub fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every statement `prepare_cached` sees: the writer runs dozens (each write path's,
    // the events outbox's, its own BEGIN/SAVEPOINT/COMMIT), and rusqlite's default of 16 made
    // them evict each other, so a write re-parsed and re-planned its SQL on every call.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;",
    )?;
    Ok(conn)
}

/// Opens the database file and applies pending migrations, for the operator CLI (no server).
pub fn open_migrated(path: &Path) -> Result<Connection, DbError> {
    make_private(path)?;
    let mut conn = open_connection(path)?;
    migrate::migrate(&mut conn)?;
    Ok(conn)
}

/// The database and its `-wal` and `-shm` files hold every secret key: only the server's user may
/// read them. SQLite gives the `-wal` and `-shm` files the database file's mode, so creating that
/// file 0600 before SQLite does covers all three; existing looser files are tightened.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // An empty file is a valid new database for SQLite.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::metadata(&file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                tracing::info!(file = %file.display(), "made the file private (mode 0600)");
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl Db {
    /// Opens (creating if needed) and migrates the database, then starts the writer thread.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let conn = open_migrated(path)?;
        // Checkpoints run on their own thread (below), so that copying the WAL into the database
        // file, and that file's fsync, never sit between a batch and its commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // When the writer starts the WAL over after a checkpoint, a file grown past this is cut
        // back to it, so a burst that outran the checkpoints does not keep its disk space.
        conn.pragma_update(None, "journal_size_limit", WAL_TRUNCATE_AT as i64)?;
        // Each job runs in a savepoint; its sub-journal (pages it changes that the batch had
        // changed before) stays in memory rather than in a temp file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let (tx, rx) = mpsc::channel::<Job>();
        let batch_sizes = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
        );
        let observed = batch_sizes.clone();
        std::thread::Builder::new()
            .name("postgate-db-writer".into())
            .spawn(move || writer_loop(conn, rx, observed))
            .map_err(|e| DbError::Corrupt(format!("cannot start writer thread: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let checkpoint_conn = open_connection(path)?;
        let stop_flag = stop.clone();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("postgate-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, wal, stop_flag))
            .map_err(|e| DbError::Corrupt(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(DbInner {
                path: path.to_owned(),
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(READERS),
                stop,
                batch_sizes,
            }),
        })
    }

    /// Runs `f` in the writer's next transaction; resolves once that transaction is durable.
    /// An `Err` from `f` rolls back only `f`'s own changes.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, done)
        });
        {
            let writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            let sender = writer.as_ref().ok_or(DbError::WriterGone)?;
            sender.send(job).map_err(|_| DbError::WriterGone)?;
        }
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| DbError::WriterGone)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path)?,
            };
            let result = f(&conn);
            inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await?
    }

    /// The histogram of jobs per group commit (1 to `MAX_BATCH`), for the metrics registry.
    pub fn batch_sizes(&self) -> Histogram {
        self.inner.batch_sizes.clone()
    }

    /// The database file's write-ahead log (its size is a metric: a WAL that keeps growing
    /// means checkpoints are starved).
    pub fn wal_path(&self) -> PathBuf {
        let mut wal = self.inner.path.as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// Stops accepting writes; the writer thread finishes queued jobs and exits.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// Copies committed WAL frames into the database file every so often (PASSIVE: never waits for
/// readers or the writer), keeping the WAL short without slowing commits.
///
/// Under reads that never pause, PASSIVE alone starves: it copies the frames, but SQLite starts
/// the WAL over only when no reader holds a snapshot in it, so the file grows without bound (a
/// soak of mixed traffic took it past 200 MiB in a minute). Past [`WAL_TRUNCATE_AT`] the
/// checkpoint is TRUNCATE instead: it waits for the readers of the moment (short: no read holds a
/// connection while a body streams), briefly holding writers back, and empties the file.
fn checkpoint_loop(conn: Connection, wal: PathBuf, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let long = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_AT);
        let mode = if long { "TRUNCATE" } else { "PASSIVE" };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, batch_sizes: Histogram) {
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        batch_sizes.observe(jobs.len() as f64);
        let outcome = run_batch(&conn, jobs, &mut completions);
        for done in completions.drain(..) {
            done(match &outcome {
                Ok(()) => Ok(()),
                // SQLite's own failures keep their code, so that a full disk at COMMIT is still
                // `is_disk_full` (507) for every caller of the batch.
                Err(rusqlite::Error::SqliteFailure(code, message)) => Err(DbError::Sqlite(
                    rusqlite::Error::SqliteFailure(*code, message.clone()),
                )),
                Err(e) => Err(DbError::Corrupt(format!("commit failed: {e}"))),
            });
        }
    }
}

fn run_batch(
    conn: &Connection,
    jobs: Vec<Job>,
    completions: &mut Vec<Completion>,
) -> Result<(), rusqlite::Error> {
    // Cached statements: these run for every job, and `execute_batch` would parse them each time.
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
    };
    if let Err(e) = run("BEGIN IMMEDIATE") {
        // Still run the jobs so each caller gets an answer; without a transaction they fail.
        for job in jobs {
            let (_, done) = job(conn);
            completions.push(done);
        }
        return Err(e);
    }
    for job in jobs {
        let savepoint = run("SAVEPOINT job");
        // A panicking job must not take the writer down with it: its caller sees `WriterGone`.
        let (ok, done) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)))
            .unwrap_or_else(|_| (false, Box::new(|_| {})));
        if savepoint.is_ok() {
            if ok {
                let _ = run("RELEASE job");
            } else {
                let _ = run("ROLLBACK TO job").and_then(|()| run("RELEASE job"));
            }
        }
        completions.push(done);
    }
    match run("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = run("ROLLBACK");
            Err(e)
        }
    }
}

/// Rewrites the one row of `ready_probe`: the write `/-/ready` sends through the writer to learn
/// that SQLite still accepts (and fsyncs) a commit.
pub fn touch_ready_probe(conn: &Connection) -> Result<(), DbError> {
    conn.prepare_cached("INSERT OR REPLACE INTO ready_probe (id, checked_at) VALUES (1, ?1)")?
        .execute([now_millis()])?;
    Ok(())
}

/// Milliseconds since the Unix epoch, the unit every timestamp column uses.
pub fn now_millis() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers that always overlap (one of them holds a snapshot at every moment) starve PASSIVE
    /// checkpoints; the WAL must still be emptied once it passes `WAL_TRUNCATE_AT`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_reads_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")?))
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2u64)
            .map(|i| {
                let (path, stop) = (path.clone(), stop.clone());
                std::thread::spawn(move || {
                    let conn = open_connection(&path).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(15 * i));
                    while !stop.load(Ordering::Relaxed) {
                        conn.execute_batch("BEGIN").unwrap();
                        conn.query_row("SELECT count(*) FROM t", [], |_| Ok(()))
                            .unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(30));
                        conn.execute_batch("COMMIT").unwrap();
                    }
                })
            })
            .collect();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let mut longest = 0;
        for i in 0..(3 * WAL_TRUNCATE_AT / (1 << 20)) as i64 {
            db.write(move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO t VALUES (?1, zeroblob(1048576))",
                    [i % 8],
                )?;
                Ok(())
            })
            .await
            .unwrap();
            // At a pace the checkpoints keep up with: only starvation can make the WAL grow.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            longest = longest.max(wal_len());
        }
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().for_each(|r| r.join().unwrap());
        assert!(
            longest < 2 * WAL_TRUNCATE_AT,
            "the WAL grew to {} MiB",
            longest >> 20
        );
    }
}
