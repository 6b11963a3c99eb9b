//! crashfs: a FUSE filesystem that loses, at a power cut, everything that was not made durable.
//!
//! `crashfs BACKING MOUNTPOINT -- COMMAND [ARGS...]` loads the directory `BACKING` (the "disk"),
//! serves it at `MOUNTPOINT` and runs `COMMAND` (a postgate server) on it. Every change is kept
//! in memory in two versions, as a POSIX filesystem must be assumed to keep them:
//!
//! - a file's bytes and size: the *live* version (what reads see) becomes *durable* only when
//!   the file is `fsync`ed or `fdatasync`ed (through any descriptor);
//! - a directory's entries (create, mkdir, rename, unlink, rmdir, as seen from that directory):
//!   durable only when the directory itself is `fsync`ed. As fsync(2) says, syncing a file does
//!   not make its name durable, and a new directory's name is an entry of its parent.
//!
//! Signals to the `crashfs` process:
//! - `SIGUSR1` is the power cut: at once every further operation fails with `EIO`, `COMMAND` (its
//!   whole process group) is sent `SIGKILL`, and `BACKING` is rewritten to the durable state only (what a disk would hold
//!   after losing power: files never synced are empty, names never synced are gone, an entry
//!   renamed away but not synced is still in its old place). crashfs then exits with status 0.
//! - `SIGTERM`/`SIGINT` stop `COMMAND` with `SIGTERM`; when `COMMAND` exits, for whatever reason,
//!   `BACKING` gets the live state (a clean unmount syncs everything) and crashfs exits with
//!   `COMMAND`'s status.
//!
//! The mount needs root (or CAP_SYS_ADMIN); run it in a mount namespace of its own
//! (`unshare --mount crashfs ...`) so that it vanishes with the process. Everything is held in
//! memory: it is a test device for data sets of some hundreds of MiB, not a filesystem.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use libc::{EEXIST, EINVAL, EIO, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EOPNOTSUPP, EPERM};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM, SIGUSR1};

const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// `rename(2)` flags.
const RENAME_NOREPLACE: u32 = 1;

type Data = Arc<Vec<u8>>;
type Entries = BTreeMap<OsString, u64>;

enum Body {
    /// `durable` shares `live`'s buffer until the next write after a sync copies it.
    File {
        live: Data,
        durable: Data,
    },
    Dir {
        live: Entries,
        durable: Entries,
    },
}

struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// Names in live directories, in durable directories, and open handles: a node goes when
    /// all three are zero.
    links: u32,
    durable_links: u32,
    open: u32,
}

#[derive(Default)]
struct Counts {
    writes: u64,
    fsyncs: u64,
    dir_fsyncs: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Set at the power cut: from then on every operation fails with `EIO`.
    cut: bool,
    counts: Counts,
}

/// One entry of a tree to write to the backing directory, parents before children.
enum Item {
    Dir(PathBuf, u16),
    File(PathBuf, Data, u16),
}

impl State {
    fn load(backing: &Path) -> io::Result<State> {
        let mut s = State {
            nodes: HashMap::new(),
            next_ino: ROOT,
            cut: false,
            counts: Counts::default(),
        };
        let root = s.load_node(backing)?;
        assert_eq!(root, ROOT);
        s.nodes.get_mut(&ROOT).unwrap().links = 1;
        s.nodes.get_mut(&ROOT).unwrap().durable_links = 1;
        Ok(s)
    }

    /// Reads `path` (a file or a directory tree) as durable nodes; returns its inode.
    fn load_node(&mut self, path: &Path) -> io::Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        // Numbered before its children: the root is inode 1.
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = if meta.is_dir() {
            let mut entries = Entries::new();
            let mut names: Vec<OsString> = std::fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                let child_path = path.join(&name);
                let t = std::fs::symlink_metadata(&child_path)?.file_type();
                if t.is_dir() || t.is_file() {
                    let child = self.load_node(&child_path)?;
                    let node = self.nodes.get_mut(&child).unwrap();
                    node.links += 1;
                    node.durable_links += 1;
                    entries.insert(name, child);
                }
            }
            Body::Dir {
                live: entries.clone(),
                durable: entries,
            }
        } else {
            let data = Arc::new(std::fs::read(path)?);
            Body::File {
                live: data.clone(),
                durable: data,
            }
        };
        self.nodes.insert(
            ino,
            Node {
                body,
                perm: (meta.mode() & 0o7777) as u16,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.modified().unwrap_or(SystemTime::now()),
                links: 0,
                durable_links: 0,
                open: 0,
            },
        );
        Ok(ino)
    }

    fn node(&self, ino: u64) -> Result<&Node, i32> {
        self.nodes.get(&ino).ok_or(ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, i32> {
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, i32> {
        let n = self.node(ino)?;
        let (kind, size, nlink) = match &n.body {
            Body::File { live, .. } => (FileType::RegularFile, live.len() as u64, n.links),
            Body::Dir { .. } => (FileType::Directory, 4096, 2),
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut Entries, i32> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { live, .. } => Ok(live),
            Body::File { .. } => Err(ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, i32> {
        match &self.node(dir)?.body {
            Body::Dir { live, .. } => live.get(name).copied().ok_or(ENOENT),
            Body::File { .. } => Err(ENOTDIR),
        }
    }

    /// A new node named `name` in `dir` (which must not have that name yet).
    fn add(
        &mut self,
        req: &Request<'_>,
        dir: u64,
        name: &OsStr,
        body: Body,
        perm: u32,
    ) -> Result<u64, i32> {
        if self.entries_mut(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                body,
                perm: (perm & 0o7777) as u16,
                uid: req.uid(),
                gid: req.gid(),
                mtime: SystemTime::now(),
                links: 1,
                durable_links: 0,
                open: 0,
            },
        );
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.touch(dir);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
        }
    }

    /// Removes the live entry `name` of `dir`.
    fn remove_entry(&mut self, dir: u64, name: &OsStr) -> Result<(), i32> {
        let ino = self.entries_mut(dir)?.remove(name).ok_or(ENOENT)?;
        self.touch(dir);
        self.node_mut(ino)?.links -= 1;
        self.maybe_free(ino);
        Ok(())
    }

    /// Forgets a node that no live or durable directory names and no one has open.
    fn maybe_free(&mut self, ino: u64) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if ino == ROOT || n.links > 0 || n.durable_links > 0 || n.open > 0 {
            return;
        }
        if let Some(Node {
            body: Body::Dir { durable, .. },
            ..
        }) = self.nodes.remove(&ino)
        {
            for child in durable.into_values() {
                if let Some(c) = self.nodes.get_mut(&child) {
                    c.durable_links -= 1;
                }
                self.maybe_free(child);
            }
        }
    }

    fn fsync(&mut self, ino: u64) -> Result<(), i32> {
        let mut added = Vec::new();
        let mut dropped = Vec::new();
        match &mut self.node_mut(ino)?.body {
            Body::File { live, durable } => {
                *durable = live.clone();
                self.counts.fsyncs += 1;
                return Ok(());
            }
            Body::Dir { live, durable } => {
                for (name, child) in live.iter() {
                    if durable.get(name) != Some(child) {
                        added.push(*child);
                    }
                }
                for (name, child) in durable.iter() {
                    if live.get(name) != Some(child) {
                        dropped.push(*child);
                    }
                }
                *durable = live.clone();
            }
        }
        self.counts.dir_fsyncs += 1;
        for child in added {
            self.node_mut(child)?.durable_links += 1;
        }
        for child in dropped {
            if let Some(c) = self.nodes.get_mut(&child) {
                c.durable_links -= 1;
            }
            self.maybe_free(child);
        }
        Ok(())
    }

    /// The tree reachable from the root through durable (or live) entries, with durable (or
    /// live) contents.
    fn tree(&self, durable: bool) -> Vec<Item> {
        let mut out = Vec::new();
        self.walk(ROOT, PathBuf::new(), durable, &mut vec![ROOT], &mut out);
        out
    }

    fn walk(&self, ino: u64, path: PathBuf, durable: bool, up: &mut Vec<u64>, out: &mut Vec<Item>) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        match &n.body {
            Body::File { live, durable: d } => {
                out.push(Item::File(
                    path,
                    if durable { d } else { live }.clone(),
                    n.perm,
                ));
            }
            Body::Dir { live, durable: d } => {
                out.push(Item::Dir(path.clone(), n.perm));
                for (name, &child) in if durable { d } else { live } {
                    // Unsynced renames of directories could make a cycle of durable entries.
                    if up.contains(&child) {
                        continue;
                    }
                    up.push(child);
                    self.walk(child, path.join(name), durable, up, out);
                    up.pop();
                }
            }
        }
    }

    /// How many files and directories hold changes that are not durable.
    fn pending(&self) -> (usize, usize) {
        let (mut files, mut dirs) = (0, 0);
        for n in self.nodes.values() {
            match &n.body {
                Body::File { live, durable } if !Arc::ptr_eq(live, durable) && live != durable => {
                    files += 1
                }
                Body::Dir { live, durable } if live != durable => dirs += 1,
                _ => {}
            }
        }
        (files, dirs)
    }
}

/// Replaces the contents of `backing` with `tree`.
fn write_tree(backing: &Path, tree: &[Item]) -> io::Result<()> {
    for entry in std::fs::read_dir(backing)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    for item in tree {
        let (path, perm) = match item {
            Item::Dir(path, perm) => {
                let path = backing.join(path);
                if !path.exists() {
                    std::fs::create_dir(&path)?;
                }
                (path, perm)
            }
            Item::File(path, data, perm) => {
                let path = backing.join(path);
                std::fs::write(&path, &data[..])?;
                (path, perm)
            }
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(u32::from(*perm)))?;
    }
    Ok(())
}

struct CrashFs {
    state: Arc<Mutex<State>>,
}

impl CrashFs {
    /// The state, or `EIO` once the power is cut.
    fn live(&self) -> Result<MutexGuard<'_, State>, i32> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.cut { Err(EIO) } else { Ok(s) }
    }
}

macro_rules! attempt {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return $reply.error(code),
        }
    };
}

impl Filesystem for CrashFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let s = attempt!(reply, self.live());
        let ino = attempt!(reply, s.child(parent, name));
        let attr = attempt!(reply, s.attr(ino));
        reply.entry(&TTL, &attr, 0);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let s = attempt!(reply, self.live());
        let attr = attempt!(reply, s.attr(ino));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = attempt!(reply, self.live());
        let n = attempt!(reply, s.node_mut(ino));
        if let Some(size) = size {
            match &mut n.body {
                Body::File { live, .. } => Arc::make_mut(live).resize(size as usize, 0),
                Body::Dir { .. } => return reply.error(EISDIR),
            }
            n.mtime = SystemTime::now();
        }
        if let Some(mode) = mode {
            n.perm = (mode & 0o7777) as u16;
        }
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        match mtime {
            Some(TimeOrNow::SpecificTime(t)) => n.mtime = t,
            Some(TimeOrNow::Now) => n.mtime = SystemTime::now(),
            None => {}
        }
        let attr = attempt!(reply, s.attr(ino));
        reply.attr(&TTL, &attr);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(EPERM);
        }
        let mut s = attempt!(reply, self.live());
        let body = Body::File {
            live: Data::default(),
            durable: Data::default(),
        };
        let ino = attempt!(reply, s.add(req, parent, name, body, mode & !umask));
        let attr = attempt!(reply, s.attr(ino));
        reply.entry(&TTL, &attr, 0);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = attempt!(reply, self.live());
        let body = Body::Dir {
            live: Entries::new(),
            durable: Entries::new(),
        };
        let ino = attempt!(reply, s.add(req, parent, name, body, mode & !umask));
        let attr = attempt!(reply, s.attr(ino));
        reply.entry(&TTL, &attr, 0);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = attempt!(reply, self.live());
        let ino = attempt!(reply, s.child(parent, name));
        if let Body::Dir { .. } = attempt!(reply, s.node(ino)).body {
            return reply.error(EISDIR);
        }
        attempt!(reply, s.remove_entry(parent, name));
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = attempt!(reply, self.live());
        let ino = attempt!(reply, s.child(parent, name));
        match &attempt!(reply, s.node(ino)).body {
            Body::Dir { live, .. } if !live.is_empty() => return reply.error(ENOTEMPTY),
            Body::Dir { .. } => {}
            Body::File { .. } => return reply.error(ENOTDIR),
        }
        attempt!(reply, s.remove_entry(parent, name));
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags & !RENAME_NOREPLACE != 0 {
            return reply.error(EINVAL);
        }
        let mut s = attempt!(reply, self.live());
        let ino = attempt!(reply, s.child(parent, name));
        attempt!(reply, s.entries_mut(newparent));
        if let Ok(old) = s.child(newparent, newname) {
            if old == ino {
                return reply.ok();
            }
            if flags & RENAME_NOREPLACE != 0 {
                return reply.error(EEXIST);
            }
            let src_dir = matches!(attempt!(reply, s.node(ino)).body, Body::Dir { .. });
            match &attempt!(reply, s.node(old)).body {
                Body::Dir { live, .. } if !src_dir => return reply.error(EISDIR),
                Body::Dir { live, .. } if !live.is_empty() => return reply.error(ENOTEMPTY),
                Body::File { .. } if src_dir => return reply.error(ENOTDIR),
                _ => {}
            }
            attempt!(reply, s.remove_entry(newparent, newname));
        }
        attempt!(reply, s.entries_mut(parent)).remove(name);
        attempt!(reply, s.entries_mut(newparent)).insert(newname.to_owned(), ino);
        s.touch(parent);
        s.touch(newparent);
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut s = attempt!(reply, self.live());
        attempt!(reply, s.node_mut(ino)).open += 1;
        reply.opened(0, 0);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let s = attempt!(reply, self.live());
        match &attempt!(reply, s.node(ino)).body {
            Body::File { live, .. } => {
                let start = (offset.max(0) as usize).min(live.len());
                let end = (start + size as usize).min(live.len());
                reply.data(&live[start..end]);
            }
            Body::Dir { .. } => reply.error(EISDIR),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = attempt!(reply, self.live());
        s.counts.writes += 1;
        let n = attempt!(reply, s.node_mut(ino));
        let Body::File { live, .. } = &mut n.body else {
            return reply.error(EISDIR);
        };
        let buf = Arc::make_mut(live);
        let (start, end) = (offset.max(0) as usize, offset.max(0) as usize + data.len());
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[start..end].copy_from_slice(data);
        n.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = attempt!(reply, self.live());
        if let Some(n) = s.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
        }
        s.maybe_free(ino);
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = attempt!(reply, self.live());
        attempt!(reply, s.fsync(ino));
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let s = attempt!(reply, self.live());
        let Body::Dir { live, .. } = &attempt!(reply, s.node(ino)).body else {
            return reply.error(ENOTDIR);
        };
        let mut all = vec![
            (ino, FileType::Directory, OsStr::new(".")),
            (ROOT, FileType::Directory, OsStr::new("..")),
        ];
        for (name, child) in live {
            let kind = match s.nodes.get(child).map(|n| &n.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((*child, kind, name.as_os_str()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = attempt!(reply, self.live());
        attempt!(reply, s.fsync(ino));
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let _s = attempt!(reply, self.live());
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        let s = attempt!(reply, self.live());
        attempt!(reply, s.node(ino));
        reply.ok();
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = attempt!(reply, self.live());
        let body = Body::File {
            live: Data::default(),
            durable: Data::default(),
        };
        let ino = attempt!(reply, s.add(req, parent, name, body, mode & !umask));
        attempt!(reply, s.node_mut(ino)).open += 1;
        let attr = attempt!(reply, s.attr(ino));
        reply.created(&TTL, &attr, 0, 0, 0);
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(EOPNOTSUPP);
        }
        let mut s = attempt!(reply, self.live());
        let Body::File { live, .. } = &mut attempt!(reply, s.node_mut(ino)).body else {
            return reply.error(EISDIR);
        };
        let end = (offset + length).max(0) as usize;
        if live.len() < end {
            Arc::make_mut(live).resize(end, 0);
        }
        reply.ok();
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: crashfs BACKING MOUNTPOINT -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    if sep != 2 || args.len() < 4 {
        eprintln!("usage: crashfs BACKING MOUNTPOINT -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    }
    match run(Path::new(&args[0]), Path::new(&args[1]), &args[3..]) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("crashfs: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(backing: &Path, mountpoint: &Path, command: &[OsString]) -> io::Result<u8> {
    let state = Arc::new(Mutex::new(State::load(backing)?));
    // Registered before the command starts, so that no signal meant for us is lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGTERM, SIGINT, SIGCHLD])?;
    let fs = CrashFs {
        state: state.clone(),
    };
    let options = [MountOption::FSName("crashfs".into()), MountOption::RW];
    let _session = fuser::spawn_mount2(fs, mountpoint, &options)?;
    // In a process group of its own, so that the power cut can kill all of it at once.
    let mut child: Child = Command::new(&command[0])
        .args(&command[1..])
        .process_group(0)
        .spawn()?;
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());

    for signal in signals.forever() {
        match signal {
            SIGUSR1 => {
                // The power cut: nothing reaches the disk from here on.
                let (tree, pending, counts) = {
                    let mut s = lock();
                    s.cut = true;
                    (s.tree(true), s.pending(), std::mem::take(&mut s.counts))
                };
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg("--")
                    .arg(format!("-{}", child.id()))
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                write_tree(backing, &tree)?;
                eprintln!(
                    "crashfs: power cut after {} writes, {} file fsyncs, {} directory fsyncs; \
                     lost the unsynced changes of {} files and {} directories",
                    counts.writes, counts.fsyncs, counts.dir_fsyncs, pending.0, pending.1
                );
                // Exiting closes /dev/fuse: the kernel aborts the mount (and the mount namespace
                // goes with this process) without another byte reaching `backing`.
                return Ok(0);
            }
            SIGTERM | SIGINT => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            }
            _ => {
                if let Some(status) = child.try_wait()? {
                    let tree = lock().tree(false);
                    write_tree(backing, &tree)?;
                    return Ok(status.code().unwrap_or(1) as u8);
                }
            }
        }
    }
    Ok(1)
}
