//! Serving what strangers uploaded and running on a public address: uploaded active content is
//! sandboxed, URLs never come from an untrusted `Host` or forwarding header, a rotated admin key
//! stops working, and the data directory is private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgate::Config;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, Creds, Resp, TestApp, obj, pattern, req_to, spawn_app, xml_tag,
};

const EVIL: &str = "evil.example";

/// A server on `data_dir` with a configuration the test adjusts (the helpers' `spawn_app`
/// always uses the defaults).
struct Server {
    base: String,
    host: String,
    http: reqwest::Client,
    state: postgate::AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(data_dir: &Path, edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::for_data_dir(data_dir);
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    edit(&mut config);
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    Server {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        http: no_redirects(),
        state,
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        drop(self.stop);
        self.task.await.unwrap().unwrap();
    }

    /// A request signed by the admin key (or `creds`), with `Host` as given.
    fn req(&self, method: Method, path: &str) -> crate::helpers::Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A GET of a `/-/` route with extra headers (e.g. a forged `Host`).
async fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = no_redirects().get(format!("{base}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Resp::read(req.send().await.unwrap()).await
}

async fn send_json(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> Resp {
    let mut req = no_redirects()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Resp::read(req.send().await.unwrap()).await
}

/// A link into `bucket` under `in/`, signed by the admin key; returns its token.
async fn create_link(state: &postgate::AppState, bucket: &str) -> String {
    let link = postgate::ui::new_link(
        bucket,
        "in/",
        10 << 20,
        None,
        None,
        Duration::from_secs(3600),
        ADMIN_AK,
    );
    let token = link.token.clone();
    state
        .db
        .write(move |c| postgate::db::links::insert(c, &link))
        .await
        .unwrap();
    token
}

/// The hidden fields of the upload page's form, unescaped.
fn page_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let value = rest.split_once(r#"value=""#).unwrap().1;
            let value = value.split_once('"').unwrap().0;
            (unescape(name), unescape(value))
        })
        .collect()
}

fn form_of(fields: &[(String, String)], data: &[u8]) -> Form {
    fields
        .iter()
        .fold(Form::new(), |f, (n, v)| f.text(n.clone(), v.clone()))
        .part("file", Part::bytes(data.to_vec()).file_name("hello.txt"))
}

#[track_caller]
fn assert_no_evil(what: &str, res: &Resp) {
    let headers = format!("{:?}", res.headers);
    assert!(
        !res.text().contains(EVIL) && !headers.contains(EVIL),
        "{what} names {EVIL}: {headers} {}",
        res.text()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("POSTGATE_ACCESS_KEY")
        .env_remove("POSTGATE_SECRET_KEY")
        .env_remove("POSTGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Rotating the admin key
// ---------------------------------------------------------------------------------------------

const NEW_AK: &str = "PGTESTADMIN000000002";
const NEW_SK: &str = "rotated-admin-secret/000000000000000000000";

#[tokio::test]
async fn a_rotated_admin_key_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let old = Creds::admin();
    let new = Creds::new(NEW_AK, NEW_SK);
    let srv = start(dir.path(), |_| {}).await;
    srv.req(Method::PUT, "/kept")
        .send()
        .await
        .assert_status(200);
    srv.req(Method::PUT, "/kept/a.txt")
        .body(b"kept".to_vec())
        .send()
        .await
        .assert_status(200);
    let token = create_link(&srv.state, "kept").await;
    // A key the operator made is not an installed admin: it must survive the rotation.
    let other = Creds::new("PGOTHERKEY0000000001", "other-secret");
    srv.state
        .db
        .write(move |c| postgate::db::keys::insert(c, "other", &other.ak, &other.sk, false))
        .await
        .unwrap();
    srv.stop().await;

    let srv = start(dir.path(), |c| {
        c.admin_key = Some((NEW_AK.to_owned(), NEW_SK.to_owned()));
    })
    .await;
    srv.req(Method::GET, "/")
        .creds(&old)
        .send()
        .await
        .assert_error(403, "InvalidAccessKeyId");
    srv.req(Method::GET, "/kept/a.txt")
        .creds(&old)
        .send()
        .await
        .assert_error(403, "InvalidAccessKeyId");
    let res = srv.req(Method::GET, "/").creds(&new).send().await;
    res.assert_status(200);
    assert!(res.text().contains("<Name>kept</Name>"), "{}", res.text());
    let res = srv.req(Method::GET, "/kept/a.txt").creds(&new).send().await;
    res.assert_status(200);
    assert_eq!(res.body.as_ref(), b"kept");
    // What the old key owned is the new key's: the bucket and the link it signed.
    let bucket = srv
        .state
        .db
        .read(|c| postgate::db::buckets::get(c, "kept"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bucket.owner, NEW_AK);
    get_with(&srv.base, &format!("/-/u/{token}"), &[])
        .await
        .assert_status(200);
    srv.stop().await;

    let listed = cli(dir.path(), &["key", "list"]);
    assert!(!listed.contains(ADMIN_AK), "{listed}");
    let admin_line = listed.lines().find(|l| l.contains(NEW_AK)).unwrap();
    assert!(admin_line.contains("yes"), "{listed}");
    let other_line = listed.lines().find(|l| l.contains("PGOTHERKEY")).unwrap();
    assert!(other_line.contains("no"), "{listed}");

    // Starting again with the same key changes nothing.
    let srv = start(dir.path(), |c| {
        c.admin_key = Some((NEW_AK.to_owned(), NEW_SK.to_owned()));
    })
    .await;
    srv.req(Method::GET, "/")
        .creds(&new)
        .send()
        .await
        .assert_status(200);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The data directory is private
// ---------------------------------------------------------------------------------------------

fn blob_paths(data_dir: &Path) -> Vec<PathBuf> {
    crate::helpers::blob_files(data_dir)
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let srv = start(&data, |_| {}).await;
    srv.req(Method::PUT, "/bkt").send().await.assert_status(200);
    srv.req(Method::PUT, "/bkt/big")
        .body(pattern(300 << 10, 7))
        .send()
        .await
        .assert_status(200);
    assert_eq!(mode(&data), 0o700, "data dir");
    for name in ["postgate.db", "postgate.db-wal", "postgate.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("tmp")), 0o700);
    let blobs = blob_paths(&data);
    assert!(!blobs.is_empty());
    for blob in &blobs {
        assert_eq!(mode(blob) & 0o077, 0, "{}", blob.display());
        assert_eq!(mode(blob.parent().unwrap()), 0o700);
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_loose_data_directory_is_tightened_at_start() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let srv = start(&data, |_| {}).await;
    srv.req(Method::PUT, "/bkt").send().await.assert_status(200);
    srv.stop().await;
    let loosen =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    loosen(&data, 0o755);
    loosen(&data.join("blobs"), 0o755);
    loosen(&data.join("tmp"), 0o777);
    loosen(&data.join("postgate.db"), 0o644);

    let srv = start(&data, |_| {}).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("tmp")), 0o700);
    assert_eq!(mode(&data.join("postgate.db")), 0o600);
    srv.req(Method::GET, "/bkt").send().await.assert_status(200);
    srv.stop().await;

    // The operator CLI opens the same files the same way.
    loosen(&data, 0o750);
    loosen(&data.join("postgate.db"), 0o640);
    cli(&data, &["key", "list"]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("postgate.db")), 0o600);
}
