//! The metadata store: SQLite in WAL mode with one writer thread and a small pool of readers.
//!
//! Writes are group-committed: the writer thread takes every job that is queued, runs each inside
//! its own SAVEPOINT (so one failing job does not undo its neighbours) and commits them all with a
//! single WAL fsync (`synchronous=FULL`). A job's caller is answered only after that commit, so an
//! answer always means durable. Reads that may scan run on tokio's blocking pool ([`Db::read`]);
//! point reads by key run on the caller's thread ([`Db::lookup`]), cheaper than the hop there and
//! back. The WAL is copied into the database file by a checkpoint thread and started over by the
//! writer, the two taking turns (`Checkpoints`).

pub mod buckets;
pub mod events;
pub mod extras;
pub mod keys;
pub mod lifecycle;
pub mod links;
mod migrate;
pub mod objects;
pub mod quota;
pub mod uploads;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

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
/// A WAL longer than this is checkpointed and started over by the writer between two batches
/// (see [`restart_wal`]), and cut back to this length when it starts over. Half the 64 MiB the
/// WAL must stay under: a checkpoint that finds a reader in its way is retried after the next
/// batch, and the WAL keeps growing meanwhile.
const WAL_RESTART_AT: u64 = 32 * 1024 * 1024;
/// How long a write may wait for a lock held by another connection (the operator CLI writing
/// beside the server, a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer's checkpoint waits for readers to leave the WAL. Every write waits with
/// it, so it is short: reads hold their snapshot only while their closure runs (a few
/// statements, never while a body streams), and a checkpoint that gives up is retried after the
/// next batch.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

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
    /// The shared control database (`--control-db`, PostgreSQL) failed; never names its URL.
    #[error("control database: {0}")]
    Control(String),
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
    checkpoints: Arc<Checkpoints>,
    /// Jobs per group commit, observed by the writer thread (served by `/-/metrics`).
    batch_sizes: Histogram,
}

impl DbInner {
    /// Runs `f` on a pooled read connection (opened on first need), then pools it again.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path)?,
        };
        let result = f(&conn);
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        self.checkpoints.stop();
    }
}

/// Statements kept prepared per connection (more than postgate has).
const STATEMENT_CACHE: usize = 256;

/// Opens a connection with the PRAGMAs every connection needs.
pub fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
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
        // file, and that file's fsync, do not sit between a batch and its commit; the writer
        // checkpoints itself only past `WAL_RESTART_AT` (see `restart_wal`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // When the writer starts the WAL over after a checkpoint, a file grown past this is cut
        // back to it, so a burst that outran the checkpoints does not keep its disk space.
        conn.pragma_update(None, "journal_size_limit", WAL_RESTART_AT as i64)?;
        // Each job runs in a savepoint; its sub-journal (pages it changes that the batch had
        // changed before) stays in memory rather than in a temp file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let (tx, rx) = mpsc::channel::<Job>();
        let batch_sizes = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
        );
        let observed = batch_sizes.clone();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let checkpoints = Arc::new(Checkpoints::new());
        let writer_turns = checkpoints.clone();
        std::thread::Builder::new()
            .name("postgate-db-writer".into())
            .spawn(move || writer_loop(conn, rx, observed, wal, writer_turns))
            .map_err(|e| DbError::Corrupt(format!("cannot start writer thread: {e}")))?;
        let checkpoint_conn = open_connection(path)?;
        let copier_turns = checkpoints.clone();
        std::thread::Builder::new()
            .name("postgate-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, copier_turns))
            .map_err(|e| DbError::Corrupt(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(DbInner {
                path: path.to_owned(),
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(READERS),
                checkpoints,
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
        let _slot = self.read_slot().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f)).await?
    }

    /// Runs `f` on a pooled read connection on the calling thread, for point reads by key (a
    /// few B-tree probes; an inline body of at most `inline_max` bytes): the hop to the blocking
    /// pool and back cost more than such a read (a 4 KiB GetObject took 74-77 µs of server CPU
    /// that way, 43-48 µs this way). The pages such a read touches are in SQLite's cache or the
    /// kernel's nearly always; when they are not, the thread waits a few page reads. Anything
    /// that scans (listings, sweeps, the outbox) goes through [`Db::read`].
    pub async fn lookup<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&Connection) -> Result<T, DbError>,
    {
        let _slot = self.read_slot().await?;
        self.inner.with_reader(f)
    }

    /// One of the [`READERS`] read slots, held while a read runs.
    async fn read_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, DbError> {
        self.inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| DbError::WriterGone)
    }

    /// The histogram of jobs per group commit (1 to `MAX_BATCH`), for the metrics registry.
    pub fn batch_sizes(&self) -> Histogram {
        self.inner.batch_sizes.clone()
    }

    /// The histogram of how long the writer's WAL restarts held up writes (seconds).
    pub fn wal_restarts(&self) -> Histogram {
        self.inner.checkpoints.restarts.clone()
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
        self.inner.checkpoints.stop();
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// The checkpoint thread and the writer take turns: the WAL is copied into the database file by
/// the checkpoint thread (PASSIVE, off the writer), and started over by the writer (RESTART,
/// while writes wait) right after one of those copies, so that the writer's own checkpoint has
/// only the frames of the last few milliseconds left to copy.
struct Checkpoints {
    turn: Mutex<Turn>,
    changed: Condvar,
    stop: AtomicBool,
    /// How long each of the writer's RESTART checkpoints held up writes.
    restarts: Histogram,
}

#[derive(Default)]
struct Turn {
    /// The writer found the WAL past `WAL_RESTART_AT` and waits for a fresh copy.
    wanted: bool,
    /// The checkpoint thread has just copied the WAL and waits (not copying) for the writer's
    /// RESTART.
    ready: bool,
}

impl Checkpoints {
    fn new() -> Checkpoints {
        Checkpoints {
            turn: Mutex::new(Turn::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            restarts: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 10,
            )),
        }
    }

    fn turn(&self) -> std::sync::MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _turn = self.turn();
        self.changed.notify_all();
    }
}

/// How long the checkpoint thread pauses between copies while frames keep arriving: short, so
/// that each copy (and the database file's fsync after it) stays small.
const CHECKPOINT_PACE: Duration = Duration::from_millis(10);
/// ... and while the WAL is still.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(250);

/// Copies committed WAL frames into the database file (PASSIVE: never waits for readers or the
/// writer) every [`CHECKPOINT_PACE`] while frames arrive, so that the copying, and the database
/// file's fsync, happen off the writer thread.
///
/// PASSIVE alone does not bound the WAL: SQLite starts the WAL over only when a writer begins a
/// transaction while every frame is copied and no reader holds a snapshot in it, which under
/// back-to-back batches and overlapping reads almost never happens. A TRUNCATE checkpoint here
/// did not help either: it needs the write lock, which the writer takes again microseconds after
/// each commit, so it lost that race for seconds (the WAL reached 215 to 331 MiB in a minute of
/// 4 KiB PUTs at 64 connections). The writer starts the WAL over itself ([`restart_wal`]), when
/// this thread has just copied and pauses for it: a RESTART at any other moment copied up to
/// 250 ms of frames and fsynced them while every write waited (3-20 ms, against 2-5 ms now).
fn checkpoint_loop(conn: Connection, shared: Arc<Checkpoints>) {
    let mut seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let log = match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
        {
            Ok(log) => log,
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint skipped");
                -1
            }
        };
        // -1: another connection was checkpointing (the writer); the WAL was busy either way.
        let pause = if log < 0 || log != seen {
            CHECKPOINT_PACE
        } else {
            CHECKPOINT_IDLE
        };
        seen = log;
        let mut turn = shared.turn();
        if turn.wanted {
            turn.ready = true;
            shared.changed.notify_all();
            // The writer takes its turn after its current batch. If it does not come (no more
            // writes), copy again later; it asks again after its next batch.
            let (mut turn, _) = shared
                .changed
                .wait_timeout_while(turn, CHECKPOINT_IDLE, |t| {
                    t.ready && !shared.stop.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|e| e.into_inner());
            turn.ready = false;
        } else {
            let _ = shared
                .changed
                .wait_timeout_while(turn, pause, |t| {
                    !t.wanted && !shared.stop.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|e| e.into_inner());
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    batch_sizes: Histogram,
    wal: PathBuf,
    checkpoints: Arc<Checkpoints>,
) {
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    let mut last_warning = None;
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
        restart_wal(&conn, &wal, &checkpoints, &mut last_warning);
    }
}

/// Between two batches, once the WAL is longer than [`WAL_RESTART_AT`], the writer runs a
/// RESTART checkpoint itself, right after the checkpoint thread's latest copy (it asks for one
/// and goes on with the next batch until that copy is done). It holds no transaction then, so the
/// write lock is its own, and the checkpoint copies the frames committed since and then waits
/// (at most [`CHECKPOINT_WAIT`]) for the readers of the moment to finish with the WAL. Its next
/// transaction then writes from the WAL's start, and `journal_size_limit` cuts the file back to
/// [`WAL_RESTART_AT`].
///
/// A checkpoint that cannot complete is retried after the next batch; why it could not is logged
/// from the pragma's answer (busy, frames in the WAL, frames copied).
fn restart_wal(
    conn: &Connection,
    wal: &Path,
    checkpoints: &Checkpoints,
    last_warning: &mut Option<Instant>,
) {
    let len = std::fs::metadata(wal).map_or(0, |m| m.len());
    if len <= WAL_RESTART_AT {
        return;
    }
    // Past one and a half times the bound the writer does not wait for a fresh copy: a checkpoint
    // thread that cannot copy (a reader that never lets go) must not leave the WAL unbounded.
    let mut turn = checkpoints.turn();
    if !turn.ready && len <= WAL_RESTART_AT + WAL_RESTART_AT / 2 {
        turn.wanted = true;
        checkpoints.changed.notify_all();
        return;
    }
    // Holding `turn` keeps the checkpoint thread from copying until the RESTART is over.
    let started = Instant::now();
    let _ = conn.busy_timeout(CHECKPOINT_WAIT);
    let answer = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    checkpoints
        .restarts
        .observe(started.elapsed().as_secs_f64());
    *turn = Turn::default();
    checkpoints.changed.notify_all();
    drop(turn);
    let why = match answer {
        Ok((0, _, _)) => return,
        // SQLite answers -1 frames when another connection was checkpointing: it does not wait.
        Ok((_, -1, _)) => "another checkpoint was running".to_owned(),
        Ok((_, log, copied)) if copied < log => format!(
            "SQLITE_BUSY: readers held snapshots older than {} of the {log} frames",
            log - copied
        ),
        Ok((_, log, _)) => {
            format!("SQLITE_BUSY: all {log} frames copied, but a reader was still reading the WAL")
        }
        Err(e) => e.to_string(),
    };
    // Worth a warning only when the WAL is well past its bound (once every 10 s at most): a
    // checkpoint that missed once is retried after the next batch.
    if len > 2 * WAL_RESTART_AT && last_warning.is_none_or(|t: Instant| t.elapsed().as_secs() >= 10)
    {
        *last_warning = Some(Instant::now());
        tracing::warn!(wal_bytes = len, reason = %why, "the WAL could not be started over");
    } else {
        tracing::debug!(wal_bytes = len, reason = %why, "the WAL could not be started over");
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

    /// A database in `dir` with one table `t (id, b)` for blobs.
    async fn blob_table(dir: &Path) -> (Db, PathBuf) {
        let path = dir.join("t.db");
        let db = Db::open(&path).unwrap();
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")?))
            .await
            .unwrap();
        (db, path)
    }

    /// Commits row `id` of `t` as a blob of `len` zero bytes; returns the WAL's size after.
    async fn put_blob(db: &Db, id: i64, len: i64) -> u64 {
        db.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO t VALUES (?1, zeroblob(?2))",
                [id, len],
            )?;
            Ok(())
        })
        .await
        .unwrap();
        std::fs::metadata(db.wal_path()).map_or(0, |m| m.len())
    }

    /// Writes back to back, each its own commit: the writer and the checkpoint thread take turns
    /// (the checkpoint thread copies, the writer then starts the WAL over), the WAL stays bounded
    /// and every start-over is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn back_to_back_writes_start_the_wal_over_after_the_checkpoint_threads_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = blob_table(dir.path()).await;
        let mut longest = 0;
        for i in 0..(3 * WAL_RESTART_AT / (256 << 10)) as i64 {
            longest = longest.max(put_blob(&db, i % 64, 256 << 10).await);
        }
        let restarts = db.wal_restarts();
        assert!(restarts.count() >= 2, "{} restarts", restarts.count());
        assert!(
            longest < 2 * WAL_RESTART_AT,
            "the WAL grew to {} MiB",
            longest >> 20
        );
        let rows: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(rows, 64);
    }

    /// Readers that always overlap (one of them holds a snapshot at every moment) starve PASSIVE
    /// checkpoints; the WAL must still be emptied once it passes `WAL_RESTART_AT`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_reads_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let (db, path) = blob_table(dir.path()).await;
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
        let mut longest = 0;
        for i in 0..(3 * WAL_RESTART_AT / (1 << 20)) as i64 {
            longest = longest.max(put_blob(&db, i % 8, 1 << 20).await);
            // At a pace the checkpoints keep up with: only starvation can make the WAL grow.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().for_each(|r| r.join().unwrap());
        assert!(
            longest < 2 * WAL_RESTART_AT,
            "the WAL grew to {} MiB",
            longest >> 20
        );
    }
}
