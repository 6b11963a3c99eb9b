//! The storage backend seam's configuration: `--backend fs` (the default) serves as before;
//! `--backend s3` is recognised, validated and served from the backend (experimental);
//! a bad combination of backend settings stops the server before it listens, with a message that
//! names what to fix and never shows the backend's secret key.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;

use crate::helpers::{free_port, req_to, serve_args, wait_ready};

/// A secret that must never appear in anything the server prints.
const BACKEND_SECRET: &str = "backend-secret-never-printed-0123456789";

/// Runs `postgate serve` with `args` after the usual ones and the backend credentials in `env`;
/// it must exit on its own. Returns its exit success and everything it printed.
async fn start_and_exit(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
    serve_args(&mut cmd, dir.path(), &host, "info");
    cmd.args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the server refused to start, and exited")
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// Environment variables a case runs with.
type Env = &'static [(&'static str, &'static str)];

const CREDS: Env = &[
    ("AWS_ACCESS_KEY_ID", "BACKENDKEY0000000001"),
    ("AWS_SECRET_ACCESS_KEY", BACKEND_SECRET),
];

fn s3(endpoint: &str) -> Vec<&str> {
    vec![
        "--backend",
        "s3",
        "--backend-endpoint",
        endpoint,
        "--backend-bucket",
        "uploads",
    ]
}

/// A complete, valid S3 backend configuration starts the `postgate` binary, which then stores
/// its objects in the backend (here a second postgate, in this process): a PUT through it is
/// `{bucket}/{key}` in the backend bucket, and reads back through it.
#[tokio::test]
async fn s3_backend_starts_and_serves_from_the_backend() {
    let backend = crate::helpers::spawn_app().await;
    backend.create_bucket("uploads").await;
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
    serve_args(&mut cmd, dir.path(), &host, "warn");
    let mut child = cmd
        .args(s3(&backend.base))
        .env("AWS_ACCESS_KEY_ID", crate::helpers::ADMIN_AK)
        .env("AWS_SECRET_ACCESS_KEY", crate::helpers::ADMIN_SK)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (base, http) = (format!("http://{host}"), reqwest::Client::new());
    wait_ready(&http, &base, &mut child, Duration::from_secs(20)).await;
    let req = |m: Method, path: &str| req_to(&base, &host, &http, m, path);
    assert_eq!(req(Method::PUT, "/s3b").send().await.status, 200);
    let put = req(Method::PUT, "/s3b/k").body(b"into the cluster".to_vec());
    assert_eq!(put.send().await.status, 200);
    let stored = backend.get("/uploads/s3b/k").await;
    stored.assert_status(200);
    assert_eq!(&stored.body[..], b"into the cluster");
    let got = req(Method::GET, "/s3b/k").send().await;
    assert_eq!((got.status, &got.body[..]), (200, &b"into the cluster"[..]));
}

/// Each bad combination stops the server with a message naming the setting to fix.
#[tokio::test]
async fn bad_backend_settings_stop_the_server_with_a_clear_message() {
    let ftp = s3("ftp://127.0.0.1/x");
    let no_host = s3("http://");
    let with_creds = s3("http://user:pw@127.0.0.1:7480");
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        // Backend settings without `--backend s3` are a mistake, not ignored.
        (
            vec!["--backend-endpoint", "http://127.0.0.1:7480"],
            CREDS,
            "need --backend s3",
        ),
        (
            vec!["--backend", "fs", "--backend-bucket", "uploads"],
            CREDS,
            "need --backend s3",
        ),
        (vec!["--backend", "s3"], CREDS, "needs --backend-endpoint"),
        (ftp, CREDS, "must be an http:// or https:// URL"),
        (no_host, CREDS, "--backend-endpoint"),
        (with_creds, CREDS, "must not carry credentials"),
        (
            vec![
                "--backend",
                "s3",
                "--backend-endpoint",
                "https://s3.example.com",
            ],
            CREDS,
            "needs --backend-bucket",
        ),
        (
            {
                let mut a = s3("https://s3.example.com");
                a[5] = "Not_A_Bucket";
                a
            },
            CREDS,
            "not a valid S3 bucket name",
        ),
        (
            {
                let mut a = s3("https://s3.example.com");
                a.extend(["--backend-region", "eu central"]);
                a
            },
            CREDS,
            "--backend-region",
        ),
        // Credentials come from the environment, both halves.
        (s3("https://s3.example.com"), &[], "AWS_ACCESS_KEY_ID"),
        (
            s3("https://s3.example.com"),
            &[("AWS_ACCESS_KEY_ID", "BACKENDKEY0000000001")],
            "AWS_SECRET_ACCESS_KEY",
        ),
        (vec!["--backend", "nfs"], CREDS, "invalid value 'nfs'"),
    ];
    for (args, env, says) in cases {
        let (ok, printed) = start_and_exit(&args, env).await;
        assert!(!ok, "{args:?} started: {printed}");
        assert!(
            printed.contains(says),
            "{args:?}: expected {says:?} in {printed}"
        );
        assert!(
            !printed.contains(BACKEND_SECRET),
            "secret printed: {printed}"
        );
    }
}

/// `--backend fs` (also through `POSTGATE_BACKEND`) is the local store of old: the server starts,
/// and an object written through it is read, listed and deleted.
#[tokio::test]
async fn explicit_fs_backend_serves_as_the_default_does() {
    for by_flag in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
        serve_args(&mut cmd, dir.path(), &host, "warn");
        match by_flag {
            true => cmd.args(["--backend", "fs"]).env_remove("POSTGATE_BACKEND"),
            false => cmd.env("POSTGATE_BACKEND", "fs"),
        };
        let mut child = cmd
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (base, http) = (format!("http://{host}"), reqwest::Client::new());
        wait_ready(&http, &base, &mut child, Duration::from_secs(20)).await;
        let req = |m: Method, path: &str| req_to(&base, &host, &http, m, path);
        assert_eq!(req(Method::PUT, "/fsb").send().await.status, 200);
        let put = req(Method::PUT, "/fsb/k").body(b"through the seam".to_vec());
        assert_eq!(put.send().await.status, 200);
        let got = req(Method::GET, "/fsb/k").send().await;
        assert_eq!((got.status, &got.body[..]), (200, &b"through the seam"[..]));
        let listed = req(Method::GET, "/fsb").query("list-type=2").send().await;
        assert!(String::from_utf8_lossy(&listed.body).contains("<Key>k</Key>"));
        assert_eq!(req(Method::DELETE, "/fsb/k").send().await.status, 204);
        assert_eq!(req(Method::HEAD, "/fsb/k").send().await.status, 404);
    }
}
