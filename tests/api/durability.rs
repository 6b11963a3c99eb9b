//! What survives disconnects, concurrency, crashes and restarts; the operator CLI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgate::policy::{KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use tokio::process::Command;

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, Creds, REGION, Resp, ServerProcess, blob_files, md5_hex, pattern,
    poll_until, req_to, send_partial, spawn_app, spawn_app_in, start_process, tmp_files,
    xml_blocks, xml_tag,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_upload_keeps_previous_version_and_no_temp_file() {
    let app = spawn_app().await;
    app.create_bucket("dur").await;
    let old = pattern(1024 * 1024 + 5, 1);
    app.put_object("dur", "obj", old.clone()).await;

    let new = pattern(5 * 1024 * 1024, 2);
    let p = app
        .req(Method::PUT, "/dur/obj")
        .unsigned()
        .body(new.clone())
        .prepare();
    let mut s = app.connect().await;
    send_partial(&mut s, &p, new.len(), new.len() / 2).await;
    // The upload has spilled to a temp file: the server is mid-upload.
    assert!(
        poll_until(Duration::from_secs(10), || !app.tmp_files().is_empty()).await,
        "upload never reached data/tmp"
    );
    // Meanwhile readers see the old version.
    let mid = app.get("/dur/obj").await;
    assert!(mid.body[..] == old[..]);
    drop(s);

    assert!(
        poll_until(Duration::from_secs(5), || app.tmp_files().is_empty()).await,
        "temp file left behind: {:?}",
        app.tmp_files()
    );
    let got = app.get("/dur/obj").await;
    got.assert_status(200);
    assert_eq!(got.body.len(), old.len());
    assert!(got.body[..] == old[..]);
    // Exactly one blob: the old version's.
    assert_eq!(blob_files(app.data_dir()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_gets_see_whole_versions_only() {
    let app = spawn_app().await;
    app.create_bucket("race").await;
    let bodies: Vec<Vec<u8>> = (0..20).map(|i| pattern(200 * 1024, 100 + i)).collect();
    let md5s: Vec<String> = bodies.iter().map(|b| md5_hex(b)).collect();
    app.put_object("race", "k", bodies[0].clone()).await;

    let puts = bodies.iter().map(|b| {
        let app = &app;
        async move {
            app.put("/race/k", b.clone()).await.assert_status(200);
        }
    });
    let gets = (0..4).map(|_| {
        let (app, md5s) = (&app, &md5s);
        async move {
            for _ in 0..10 {
                let res = app.get("/race/k").await;
                res.assert_status(200);
                let have = md5_hex(&res.body);
                assert_eq!(res.body.len(), 200 * 1024);
                assert!(md5s.contains(&have), "GET returned a mixed body");
                assert_eq!(
                    res.header("etag").unwrap(),
                    format!("\"{have}\""),
                    "ETag does not match the body"
                );
            }
        }
    });
    let (_, _) = tokio::join!(
        futures_util::future::join_all(puts),
        futures_util::future::join_all(gets)
    );
    let last = app.get("/race/k").await;
    assert!(md5s.contains(&md5_hex(&last.body)));
    // Every replaced blob was removed: one blob left, no temp files.
    assert!(
        poll_until(Duration::from_secs(5), || blob_files(app.data_dir()).len()
            == 1)
        .await,
        "{:?}",
        blob_files(app.data_dir())
    );
    assert!(app.tmp_files().is_empty());
}

/// A `postgate serve` subprocess on `dir`.
type Server = ServerProcess;

async fn start_server(dir: &Path) -> Server {
    start(Command::new(env!("CARGO_BIN_EXE_postgate")), dir).await
}

/// `postgate serve` with its data directory on a tmpfs of `size` (`3m`), mounted in a mount
/// namespace of the server's own (`unshare`; root, or user namespaces, may do that), so that a
/// test can fill the disk without touching the machine's. The server's files are seen through
/// `Server::data_dir`.
async fn start_server_on_tmpfs(dir: &Path, size: &str) -> Server {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--map-root-user", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@""#)
        .args(["sh", size])
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_postgate"));
    start(cmd, dir).await
}

/// Runs `cmd serve --data-dir dir --addr ...` and waits until it answers its health check.
async fn start(cmd: Command, dir: &Path) -> Server {
    start_process(cmd, dir, "warn", Duration::from_secs(20)).await
}

impl Server {
    fn req(&self, method: Method, path: &str) -> crate::helpers::Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }

    /// A PUT that must succeed (a bucket when `path` has no key).
    async fn put_ok(&self, path: &str, body: &[u8]) {
        self.req(Method::PUT, path)
            .body(body.to_vec())
            .send()
            .await
            .assert_status(200);
    }

    /// `dir` as the server process sees it (in its own mount namespace, if it has one).
    fn data_dir(&self, dir: &Path) -> PathBuf {
        let pid = self.child.id().expect("server running");
        Path::new(&format!("/proc/{pid}/root")).join(dir.strip_prefix("/").unwrap())
    }
}

/// Bytes free on the filesystem that holds `path` (`statfs` of the path itself: `df` would look
/// the path up in this process's mount table, not the server's).
fn free_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["--file-system", "--format=%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (blocks, size) = text.trim().split_once(' ').unwrap();
    blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
}

/// Sends until an answer arrives. A server that answers before the body has all arrived, and
/// closes, can reach a client still writing as a reset instead of the answer; trying again meets
/// the same answer, since the failed upload left nothing behind.
async fn answer(mut request: impl FnMut() -> reqwest::RequestBuilder) -> Resp {
    for _ in 0..5 {
        match request().send().await {
            Ok(res) => return Resp::read(res).await,
            Err(e) => eprintln!("no answer ({e}); sending again"),
        }
    }
    panic!("no answer in 5 tries");
}

/// A full disk: an upload that does not fit answers 507 `XPostgateStorageFull` and leaves no
/// object and no temp file; the version it would have replaced stays whole; and with the failed
/// upload's bytes gone, an upload that fits succeeds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_mid_upload_answers_507_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_on_tmpfs(dir.path(), "3m").await;
    let seen = server.data_dir(dir.path());
    server.put_ok("/full", b"").await;
    let kept = pattern(1024 * 1024 + 1, 3);
    server.put_ok("/full/kept", &kept).await;
    assert_eq!(blob_files(&seen).len(), 1, "kept is a blob on the tmpfs");

    // Just past what is free, so that little of the body is left unread when the server answers.
    let too_big = pattern(free_bytes(&seen) as usize + 256 * 1024, 4);
    for key in ["/full/new", "/full/kept"] {
        let p = server.req(Method::PUT, key).body(too_big.clone()).prepare();
        let res = answer(|| {
            let req = server.http.request(p.method.clone(), &p.url);
            req.headers(p.headers.clone()).body(p.body.clone())
        })
        .await;
        res.assert_error(507, "XPostgateStorageFull");
        assert!(
            poll_until(Duration::from_secs(5), || tmp_files(&seen).is_empty()).await,
            "temp file left behind: {:?}",
            tmp_files(&seen)
        );
    }
    // A browser's POST upload takes the same path.
    let policy = PostPolicyRequest::new("full", KeySpec::Exact("posted".into()), 10 << 20);
    let url = format!("{}/full", server.base);
    let signed = issue(
        &policy,
        ADMIN_AK,
        ADMIN_SK,
        REGION,
        &url,
        OffsetDateTime::now_utc(),
    );
    let fields = signed.unwrap().fields;
    let res = answer(|| {
        let form = fields.iter().fold(Form::new(), |form, (name, value)| {
            form.text(name.clone(), value.clone())
        });
        let file = Part::bytes(too_big.clone()).file_name("f.bin");
        server.http.post(&url).multipart(form.part("file", file))
    })
    .await;
    res.assert_error(507, "XPostgateStorageFull");
    assert!(
        poll_until(Duration::from_secs(5), || tmp_files(&seen).is_empty()).await,
        "temp file left behind: {:?}",
        tmp_files(&seen)
    );
    for key in ["/full/new", "/full/posted"] {
        server
            .req(Method::GET, key)
            .send()
            .await
            .assert_error(404, "NoSuchKey");
    }
    let got = server.req(Method::GET, "/full/kept").send().await;
    got.assert_status(200);
    assert!(got.body[..] == kept[..], "the old version changed");
    assert_eq!(blob_files(&seen).len(), 1);

    let after = pattern(512 * 1024, 5);
    server.put_ok("/full/after", &after).await;
    let got = server.req(Method::GET, "/full/after").send().await;
    got.assert_status(200);
    assert!(got.body[..] == after[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_restart_keeps_old_object_and_sweeps_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path()).await;
    server.put_ok("/crash", b"").await;
    let small = b"small inline object".to_vec();
    let big = pattern(1024 * 1024 + 3, 7);
    server.put_ok("/crash/small", &small).await;
    server.put_ok("/crash/big", &big).await;

    // Overwrite of `big` and a new key, both cut off by SIGKILL mid-body.
    let huge = pattern(16 * 1024 * 1024, 8);
    let mut streams = Vec::new();
    for key in ["/crash/big", "/crash/new"] {
        let p = server
            .req(Method::PUT, key)
            .unsigned()
            .body(huge.clone())
            .prepare();
        let mut s = tokio::net::TcpStream::connect(&server.host).await.unwrap();
        send_partial(&mut s, &p, huge.len(), 2 * 1024 * 1024).await;
        streams.push(s);
    }
    assert!(
        poll_until(Duration::from_secs(10), || tmp_files(dir.path()).len() == 2).await,
        "uploads never reached data/tmp: {:?}",
        tmp_files(dir.path())
    );
    server.child.kill().await.unwrap();
    drop(streams);
    assert_eq!(
        tmp_files(dir.path()).len(),
        2,
        "SIGKILL leaves the temp files"
    );

    // A stray blob nobody refers to, as a crash between rename and commit leaves.
    let stray_dir = dir.path().join("blobs").join("ab").join("cd");
    std::fs::create_dir_all(&stray_dir).unwrap();
    let stray = stray_dir.join("abcd0000-stray-blob");
    std::fs::write(&stray, b"orphan").unwrap();

    let server = start_server(dir.path()).await;
    let res = server
        .http
        .get(format!("{}/-/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );
    assert!(!stray.exists(), "stray blob not swept");
    assert_eq!(blob_files(dir.path()).len(), 1, "only big's blob is left");

    let got = server.req(Method::GET, "/crash/big").send().await;
    got.assert_status(200);
    assert!(got.body[..] == big[..]);
    let got = server.req(Method::GET, "/crash/small").send().await;
    assert_eq!(&got.body[..], &small[..]);
    server
        .req(Method::GET, "/crash/new")
        .send()
        .await
        .assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn start_up_sweep_removes_stray_blobs_and_temp_files_and_keeps_referenced_blobs() {
    let app = spawn_app().await;
    app.create_bucket("sweep").await;
    let data = pattern(200 * 1024, 3);
    app.put_object("sweep", "keep", data.clone()).await;
    let dir = app.stop().await;

    let stray_dir = dir.path().join("blobs").join("ab").join("cd");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(stray_dir.join("abcd-stray"), b"orphan").unwrap();
    std::fs::write(dir.path().join("tmp").join("leftover"), b"partial").unwrap();
    assert_eq!(blob_files(dir.path()).len(), 2);

    let app = spawn_app_in(dir).await;
    assert!(
        !stray_dir.join("abcd-stray").exists(),
        "stray blob not swept"
    );
    assert!(app.tmp_files().is_empty());
    assert_eq!(blob_files(app.data_dir()).len(), 1);
    let got = app.get("/sweep/keep").await;
    got.assert_status(200);
    assert!(got.body[..] == data[..]);
}

async fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("POSTGATE_ACCESS_KEY")
        .env_remove("POSTGATE_SECRET_KEY")
        .env_remove("POSTGATE_CONFIG")
        .env_remove("POSTGATE_DATA_DIR")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "postgate {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {output}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn operator_cli_creates_keys_buckets_and_grants_that_the_server_honours() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), &["key", "create", "alice"]).await;
    let alice = Creds::new(&field(&out, "access key:"), &field(&out, "secret key:"));
    let out = cli(dir.path(), &["key", "create", "bob"]).await;
    let bob = Creds::new(&field(&out, "access key:"), &field(&out, "secret key:"));
    assert_ne!(alice.ak, bob.ak);

    let out = cli(
        dir.path(),
        &["bucket", "create", "clibucket", "--owner", &alice.ak],
    )
    .await;
    assert!(out.contains("clibucket"), "{out}");
    let out = cli(dir.path(), &["bucket", "list"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with("clibucket"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(&alice.ak), "{row}");
    cli(
        dir.path(),
        &["bucket", "allow", "clibucket", &bob.ak, "read"],
    )
    .await;
    let out = cli(dir.path(), &["key", "list"]).await;
    assert!(out.contains("alice") && out.contains("bob"), "{out}");

    let app = spawn_app_in(dir).await;
    // Alice owns the bucket.
    app.req(Method::PUT, "/clibucket/hello")
        .creds(&alice)
        .body("from alice")
        .send()
        .await
        .assert_status(200);
    let res = app.req(Method::GET, "/").creds(&alice).send().await;
    let names: Vec<String> = xml_blocks(&res.text(), "Bucket")
        .iter()
        .filter_map(|b| xml_tag(b, "Name"))
        .collect();
    assert_eq!(names, ["clibucket"]);
    // Bob may read, not write.
    let res = app
        .req(Method::GET, "/clibucket/hello")
        .creds(&bob)
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(res.text(), "from alice");
    app.req(Method::PUT, "/clibucket/bob")
        .creds(&bob)
        .body("x")
        .send()
        .await
        .assert_error(403, "AccessDenied");
    // The CLI refuses unknown keys and buckets.
    let bad = Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(app.data_dir())
        .args(["bucket", "allow", "nosuchbucket", &bob.ak, "read"])
        .env_remove("POSTGATE_ACCESS_KEY")
        .env_remove("POSTGATE_SECRET_KEY")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

impl Server {
    /// A JSON API call as the admin: (status, JSON).
    async fn api(&self, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// `uploaded_files` of link `id`, from the links API.
    async fn link_count(&self, id: &str) -> u64 {
        let (status, json) = self.api(Method::GET, "/-/api/links", "").await;
        assert_eq!(status, 200);
        json["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .unwrap()["uploaded_files"]
            .as_u64()
            .unwrap()
    }

    /// The link page's form (`/-/u/{token}/policy`) with a text file `name`, as a raw
    /// `multipart/form-data` request: (request head, body).
    async fn link_form(&self, token: &str, name: &str, file: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let res = self
            .http
            .get(format!("{}/-/u/{token}/policy", self.base))
            .send()
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        let boundary = "----crashformboundary";
        let mut body = Vec::new();
        let mut fields: Vec<(String, String)> = json["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        fields.push(("Content-Type".into(), "text/plain".into()));
        for (k, v) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: text/plain\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let path = url::Url::parse(json["url"].as_str().unwrap())
            .unwrap()
            .path()
            .to_owned();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n\
             content-length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        (head.into_bytes(), body)
    }
}

/// A form upload through a link takes the link's slot before its file is read. A server killed
/// before the file is stored must not keep that slot: after the restart the link counts no file
/// and takes one (a one-file link); a file that was stored before a kill keeps its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_link_form_gives_the_slot_back_at_restart() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path()).await;
    server.put_ok("/linked", b"").await;
    let (status, json) = server
        .api(
            Method::POST,
            "/-/api/links",
            r#"{"bucket": "linked", "prefix": "in/", "max_files": 1}"#,
        )
        .await;
    assert_eq!(status, 201, "{json}");
    let id = json["id"].as_str().unwrap().to_owned();
    let token = json["url"]
        .as_str()
        .unwrap()
        .rsplit_once("/-/u/")
        .unwrap()
        .1
        .to_owned();

    // Half of a 2 MiB file, then SIGKILL while the server waits for the rest.
    let file = pattern(2 * 1024 * 1024, 11);
    let (head, body) = server.link_form(&token, "cut.txt", &file).await;
    let mut s = tokio::net::TcpStream::connect(&server.host).await.unwrap();
    s.write_all(&head).await.unwrap();
    s.write_all(&body[..body.len() / 2]).await.unwrap();
    s.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.link_count(&id).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the form never took its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().await.unwrap();
    drop(s);

    let mut server = start_server(dir.path()).await;
    assert_eq!(
        server.link_count(&id).await,
        0,
        "the killed upload's slot is given back"
    );
    server
        .req(Method::GET, "/linked/in/cut.txt")
        .send()
        .await
        .assert_error(404, "NoSuchKey");

    // The link takes its one file; stored, it keeps its slot across another kill.
    let (head, body) = server.link_form(&token, "whole.txt", b"whole file").await;
    let mut s = tokio::net::TcpStream::connect(&server.host).await.unwrap();
    s.write_all(&head).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer)
        .await
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    server.child.kill().await.unwrap();
    let server = start_server(dir.path()).await;
    assert_eq!(server.link_count(&id).await, 1);
    let got = server.req(Method::GET, "/linked/in/whole.txt").send().await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"whole file");
    let status = server
        .http
        .get(format!("{}/-/u/{token}/policy", server.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 410, "a full link refuses more files");
}

/// A full disk under concurrency: 16 uploads at once into a tmpfs that holds about half of them.
/// Each is stored whole or answered 507 `XPostgateStorageFull`; nothing partial is left (no temp
/// file, no blob without its object); once the stored objects are deleted, the server takes
/// uploads again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_uploads_into_a_full_disk_are_whole_or_507_and_the_server_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_on_tmpfs(dir.path(), "10m").await;
    let seen = server.data_dir(dir.path());
    server.put_ok("/conc", b"").await;
    let bodies: Vec<Vec<u8>> = (0..16).map(|i| pattern(1024 * 1024, 100 + i)).collect();

    let uploads = bodies.iter().enumerate().map(|(i, body)| {
        let server = &server;
        async move {
            let p = server
                .req(Method::PUT, &format!("/conc/k{i}"))
                .body(body.clone())
                .prepare();
            answer(|| {
                let req = server.http.request(p.method.clone(), &p.url);
                req.headers(p.headers.clone()).body(p.body.clone())
            })
            .await
        }
    });
    let answers = futures_util::future::join_all(uploads).await;
    let mut stored = Vec::new();
    for (i, res) in answers.iter().enumerate() {
        match res.status {
            200 => stored.push(i),
            _ => res.assert_error(507, "XPostgateStorageFull"),
        }
    }
    assert!(
        !stored.is_empty() && stored.len() < 16,
        "the disk holds some of the uploads, not all: {} stored",
        stored.len()
    );
    assert!(
        poll_until(Duration::from_secs(5), || tmp_files(&seen).is_empty()).await,
        "temp files left behind: {:?}",
        tmp_files(&seen)
    );
    for (i, body) in bodies.iter().enumerate() {
        let got = server.req(Method::GET, &format!("/conc/k{i}")).send().await;
        if stored.contains(&i) {
            got.assert_status(200);
            assert!(got.body[..] == body[..], "k{i} is whole");
        } else {
            got.assert_error(404, "NoSuchKey");
        }
    }
    assert!(
        poll_until(Duration::from_secs(5), || blob_files(&seen).len()
            == stored.len())
        .await,
        "{} blobs for {} objects",
        blob_files(&seen).len(),
        stored.len()
    );

    // Space freed: uploads succeed again, without a restart.
    for i in &stored {
        server
            .req(Method::DELETE, &format!("/conc/k{i}"))
            .send()
            .await
            .assert_status(204);
    }
    for (i, body) in bodies.iter().take(4).enumerate() {
        server.put_ok(&format!("/conc/again{i}"), body).await;
        let got = server
            .req(Method::GET, &format!("/conc/again{i}"))
            .send()
            .await;
        assert!(got.body[..] == body[..]);
    }
}
