//! Group `count` (only when named: `cargo bench --bench s3 -- --only count`): instructions per
//! request, a figure that does not move with the machine's load, unlike the req/s of figures 4, 5
//! and 8 on a shared machine.
//!
//! The release server runs under `valgrind --tool=callgrind` on a fresh data directory; the same
//! request builders as figures 4, 5 and 8 send, at 64 connections, `COUNT_PER_CONN` requests per
//! connection of each operation: 4 KiB SigV4 PutObject (real payload hash), 4 KiB POST Object
//! (the presigned form of figure 8), 4 KiB GetObject. `callgrind_control --dump` after each
//! operation closes one profile per operation, so each profile's total instructions (Ir, whole
//! process, every thread) divided by its request count is the row. The profiles stay in
//! `<target>/bench/count/` for `callgrind_annotate --inclusive=yes <file>`; the top inclusive
//! functions of each are written beside them (`<op>.top.txt`).

use super::*;

/// Requests per connection and operation (64 connections: 2,048 requests per operation).
const COUNT_PER_CONN: u64 = 32;

/// Runs the server under callgrind and fills one row per operation (Ir per request).
pub(super) async fn figure_count(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    let dir = target_dir().join("bench").join("count");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("callgrind.out");
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        // Each dump names its functions itself (compressed names refer to earlier dumps).
        "--compress-strings=no".into(),
    ];
    step("count: postgate under callgrind");
    let server = spawn_postgate_wrapped(o, &scratch.join("count"), "count", &[], &wrapper).await;
    let signer = create_bucket(&server).await;
    let host = server.addr.to_string();

    // Setup (bucket, GET keys, the POST policy) goes into a profile of its own.
    let paths = preload_get_keys(&server, &signer).await;
    let post = presign_post(server.addr, KeySpec::Prefix("post/".into()), SMALL as u64);
    dump(&server, &dir, "setup");

    let put: Arc<dyn RequestSource> =
        Arc::new(PutSmall::new(signer.clone(), "put", COUNT_PER_CONN));
    let post: Arc<dyn RequestSource> = Arc::new(PostSmall {
        host: host.clone(),
        form: PostForm::new(&post),
        file: pattern(SMALL, 43),
    });
    let get: Arc<dyn RequestSource> = Arc::new(GetSmall::new(Signer::new(&host), paths));
    let cases = [
        (
            "put",
            "4c PutObject 4 KiB, SigV4 + payload hash",
            put,
            StatusCode::OK,
        ),
        (
            "post",
            "8c POST Object 4 KiB, presigned form",
            post,
            StatusCode::NO_CONTENT,
        ),
        ("get", "5c GetObject 4 KiB", get, StatusCode::OK),
    ];
    for (name, figure, src, status) in cases {
        step(&format!(
            "count: {name} x {}",
            COUNT_PER_CONN * CONNECTIONS as u64
        ));
        let r = run_load(server.addr, src, status, |_| Plan::Count(COUNT_PER_CONN)).await;
        let file = dump(&server, &dir, name);
        let ir = total_ir(&file);
        let top = annotate(&file, &dir.join(format!("{name}.top.txt")));
        rows.push(Row {
            figure: format!("{figure} (instructions per request, callgrind)"),
            value: ir as f64 / r.completed.max(1) as f64,
            unit: "Ir/req",
            limit: None,
            target: Target::None,
            must: Some((
                r.errors == 0 && r.completed > 0,
                format!(
                    "{} errors; first: {}",
                    r.errors,
                    r.first_error.unwrap_or_default()
                ),
            )),
            note: format!(
                "{} requests, {ir} Ir; {}; top: {top}",
                r.completed,
                file.display()
            ),
        });
    }
    webhook_rows(&server, &scratch.join("count"), &dir, rows).await;
    server.stop();
}

/// Uploads per connection of each webhook row (64 connections: 1,024 uploads).
const HOOK_PER_CONN: u64 = 16;

/// Rows 8c0/8cq/8cw: what a webhook target costs a 4 KiB POST upload, in instructions of the
/// whole server process. The targets of figures 8w/8q are declared (`declare_hooks`): keys
/// `hook/*` go to a receiver answering 204, which runs in this process (outside the measured
/// one), keys `queued/*` to one that never answers. Then, on the same server, one profile per
/// case: keys `plain/*` (no target wants them: the baseline), `hook/*` (the outbox row, its
/// delivery and its deletion, the profile closed once every event arrived), `queued/*` (the
/// outbox row; the paused lane's first window of attempts is in it too). The ratio of each to
/// the baseline is the upload rate a CPU-bound server keeps with a target: the figure to hold
/// at 0.9 or more.
async fn webhook_rows(server: &Proc, data_dir: &Path, dir: &Path, rows: &mut Vec<Row>) {
    step("count: webhook targets");
    let receivers = [HookReceiver::start(), HookReceiver::start()];
    let _silent = declare_hooks(data_dir, &receivers);
    let [receiver, batched] = receivers;
    let host = server.addr.to_string();
    let form = |prefix: &str| {
        PostForm::new(&presign_post(
            server.addr,
            KeySpec::Prefix(prefix.into()),
            SMALL as u64,
        ))
    };
    // The server reads the targets within 5 s (more under callgrind): probe until one arrives.
    let probe = form("hook/probe-");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut probes = 0;
    while receiver.received() == 0 {
        assert!(
            Instant::now() < deadline,
            "the server did not pick up the webhook targets"
        );
        let req = probe.request(
            &host,
            &format!("p{probes}"),
            pattern(SMALL, 45),
            SMALL as u64,
        );
        let t = one_request(server.addr, req).await.expect("probe POST");
        assert_eq!(t.status, StatusCode::NO_CONTENT, "probe POST");
        probes += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Probes sent before the server read the targets made no event: wait until the count
    // stops moving, and count from there.
    let mut expected = receiver.received();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = receiver.received();
        if now == expected {
            break;
        }
        expected = now;
    }
    step(&format!("count: targets read after {probes} probe uploads"));
    dump(server, dir, "hook-setup");

    let cases = [
        (
            "post-none",
            "plain/",
            "8c0 POST Object 4 KiB, no target wants it",
        ),
        (
            "post-hook",
            "hook/",
            "8cw POST Object 4 KiB, webhook target delivering",
        ),
        (
            "post-batched",
            "batch/",
            "8cb POST Object 4 KiB, webhook target with --batch 100 delivering",
        ),
        (
            "post-paused",
            "queued/",
            "8cq POST Object 4 KiB, outbox only, delivery paused",
        ),
    ];
    let mut batched_expected = 0;
    let mut base = 0.0;
    for (name, prefix, figure) in cases {
        step(&format!(
            "count: {name} x {}",
            HOOK_PER_CONN * CONNECTIONS as u64
        ));
        let src: Arc<dyn RequestSource> = Arc::new(PostSmall {
            host: host.clone(),
            form: form(prefix),
            file: pattern(SMALL, 46),
        });
        let r = run_load(server.addr, src, StatusCode::NO_CONTENT, |_| {
            Plan::Count(HOOK_PER_CONN)
        })
        .await;
        let mut failures = Vec::new();
        if r.errors > 0 || r.completed == 0 {
            failures.push(format!(
                "{} errors; first: {}",
                r.errors,
                r.first_error.clone().unwrap_or_default()
            ));
        }
        let (to, expected) = match prefix {
            "hook/" => (Some(&receiver), &mut expected),
            "batch/" => (Some(&batched), &mut batched_expected),
            _ => (None, &mut 0),
        };
        if let Some(to) = to {
            *expected += r.completed;
            if !wait_received(to, *expected).await {
                failures.push(format!(
                    "{} of {expected} events delivered in {} POSTs",
                    to.received(),
                    to.posts()
                ));
            }
        }
        let file = dump(server, dir, name);
        let ir = total_ir(&file);
        let top = annotate(&file, &dir.join(format!("{name}.top.txt")));
        let per = ir as f64 / r.completed.max(1) as f64;
        if prefix == "plain/" {
            base = per;
        }
        rows.push(Row {
            figure: format!("{figure} (uploads per 10^9 instructions, callgrind)"),
            value: 1e9 / per,
            unit: "up/GIr",
            limit: (prefix != "plain/").then(|| ("no target".to_owned(), 1e9 / base)),
            target: if prefix == "plain/" {
                Target::None
            } else {
                Target::RatioAtLeast(0.9)
            },
            must: Some((failures.is_empty(), failures.join("; "))),
            note: format!(
                "{} uploads, {per:.0} Ir per upload ({:+.0} over no target), {ir} Ir; {}; top: {top}",
                r.completed,
                per - base,
                file.display()
            ),
        });
    }
    receiver.stop();
    batched.stop();
}

/// Waits (at most 10 minutes) until `receiver` got `n` events; whether it did.
async fn wait_received(receiver: &HookReceiver, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.received() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.received() >= n
}

/// `callgrind_control --dump=<name>`; returns the profile file it wrote (the newest in `dir`).
fn dump(server: &Proc, dir: &Path, name: &str) -> PathBuf {
    let before = profiles(dir);
    let st = Command::new("callgrind_control")
        .arg(format!("--dump={name}"))
        .arg(server.pid().to_string())
        .stdout(Stdio::null())
        .status()
        .expect("running callgrind_control");
    assert!(st.success(), "callgrind_control --dump failed");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(new) = profiles(dir).into_iter().find(|p| !before.contains(p)) {
            // Written by the server's own thread: wait until its `totals:` line is there.
            if std::fs::read_to_string(&new).is_ok_and(|t| t.contains("\ntotals:")) {
                return new;
            }
        }
        assert!(Instant::now() < deadline, "no callgrind dump for {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn profiles(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out"))
        })
        .collect()
}

/// The `totals:` (or `summary:`) line of a callgrind profile: all instructions it counted.
fn total_ir(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// The first `TOP` functions of `callgrind_annotate`, by self cost then inclusive, into `out`.
fn annotate(file: &Path, out: &Path) -> String {
    const TOP: usize = 40;
    let mut text = String::new();
    for inclusive in ["no", "yes"] {
        let report = Command::new("callgrind_annotate")
            .arg(format!("--inclusive={inclusive}"))
            .arg("--auto=no")
            .arg(file)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let _ = writeln!(text, "== inclusive={inclusive}");
        for line in report
            .lines()
            .skip_while(|l| !l.contains("file:function"))
            .skip(2)
            .take(TOP)
        {
            let _ = writeln!(text, "{line}");
        }
    }
    std::fs::write(out, &text).unwrap();
    out.display().to_string()
}
