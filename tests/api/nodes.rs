//! Several gateway nodes (docs/cluster.md sections 3-4): two postgate nodes, both `--backend s3`
//! in front of one cluster postgate, sharing links, their counters, keys and grants through one
//! PostgreSQL (`--control-db`, started by `tests/pg/cluster.sh` for each test). Everything over
//! real HTTP on 127.0.0.1; the nodes share their admin key (POSTGATE_ACCESS_KEY/SECRET_KEY) and
//! each creates the bucket, since the admin key and buckets are still each node's.
//!
//! Without PostgreSQL's binaries the tests fail when `CI` is set, and say they skip otherwise.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::events::{Received, Receiver, SECRET, notification_xml, records, wait_for_records};
use crate::helpers::*;
use crate::linkkit::{api, call, link_form, make_link, post_form};

/// The backend bucket every node stores into.
const CLUSTER: &str = "cluster";

/// A throwaway PostgreSQL (`tests/pg/cluster.sh`), stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg/cluster.sh")
}

/// Starts PostgreSQL, or `None` (with the reason printed) when its binaries are missing and
/// `CI` is not set; in CI a missing PostgreSQL fails the test.
fn postgres() -> Option<Postgres> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|v| v.path().join("bin/pg_ctl").exists()))
        .unwrap_or(false);
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/pg_ctl): .ci/run installs it"
        );
        eprintln!("SKIPPED: PostgreSQL is not installed (apt-get install postgresql)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(script())
        .arg("start")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster.sh start: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("POSTGATE_CONTROL_DB="))
        .expect("cluster.sh prints the URL")
        .to_owned();
    Some(Postgres { dir, url })
}

/// The cluster postgate (its bucket made) and the shared PostgreSQL.
struct Cluster {
    backend: TestApp,
    pg: Postgres,
}

async fn cluster() -> Option<Cluster> {
    let pg = postgres()?;
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    Some(Cluster { backend, pg })
}

impl Cluster {
    /// A node in this process, `--backend s3` over the cluster, `--control-db`, with `bucket`.
    async fn node(&self, id: &str, bucket: &str) -> TestApp {
        self.node_with(id, bucket, |_| {}).await
    }

    /// [`Cluster::node`] with its heartbeat every `heartbeat`, taking other nodes for stopped
    /// after `expiry` (`--node-heartbeat`, `--node-expiry`).
    async fn node_beating(
        &self,
        id: &str,
        bucket: &str,
        heartbeat: Duration,
        expiry: Duration,
    ) -> TestApp {
        self.node_with(id, bucket, move |config| {
            config.node_heartbeat = heartbeat;
            config.node_expiry = expiry;
        })
        .await
    }

    /// A node of this cluster (S3 backend, the control database, node id `id`) with `bucket`
    /// created, its configuration changed by `tweak` last.
    async fn node_with(
        &self,
        id: &str,
        bucket: &str,
        tweak: impl FnOnce(&mut postgate::Config),
    ) -> TestApp {
        let node = spawn_app_with(|config| {
            self.as_node(id, config);
            tweak(config);
        })
        .await;
        ensure_bucket(&node, bucket).await;
        node
    }

    /// `config` on the cluster's backend (`--backend s3`), without the control database.
    fn on_backend(&self, config: &mut postgate::Config) {
        config.backend = postgate::config::Backend::S3(postgate::config::S3Backend {
            endpoint: self.backend.base.clone(),
            bucket: CLUSTER.into(),
            region: REGION.into(),
            access_key_id: ADMIN_AK.into(),
            secret_access_key: ADMIN_SK.into(),
        });
    }

    /// `config` as node `id` of this cluster: its backend and the control database.
    fn as_node(&self, id: &str, config: &mut postgate::Config) {
        self.on_backend(config);
        config.control_db = Some(self.pg.url.clone());
        config.node_id = Some(id.to_owned());
    }

    /// The keys of the cluster's bucket under `prefix`.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let res = self
            .backend
            .req(Method::GET, &format!("/{CLUSTER}"))
            .query(&format!("list-type=2&prefix={prefix}"))
            .send()
            .await;
        res.assert_status(200);
        xml_tags(&res.text(), "Key")
    }
}

/// Creates `bucket` through `node`, unless the nodes share it already (409
/// BucketAlreadyOwnedByYou: the nodes share their admin key, the owner).
async fn ensure_bucket(node: &TestApp, bucket: &str) {
    let res = node.req(Method::PUT, &format!("/{bucket}")).send().await;
    if res.status != 200 {
        res.assert_error(409, "BucketAlreadyOwnedByYou");
    }
}

/// The link `id` as a node's JSON API lists it.
async fn listed(node: &TestApp, id: &str) -> serde_json::Value {
    let (res, json) = api(
        node,
        Method::GET,
        "/-/api/links",
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(200);
    json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("link {id} not listed: {json}"))
        .clone()
}

/// (a) A link with max_files = 5 and 20 concurrent form uploads alternating between two nodes:
/// exactly 5 stored in the cluster, 15 refused with the link's full answer, and both nodes
/// count 5.
#[tokio::test]
async fn max_files_holds_across_nodes_under_concurrent_uploads() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "ups", "prefix": "in/", "max_files": 5}),
    )
    .await;
    let nodes = [&a, &b];
    // Every form first (the link is not full yet), then all the files at once.
    let mut forms = Vec::new();
    for i in 0..20 {
        let node = nodes[i % 2];
        let query = format!("?filename=f{i}.txt&type=text%2Fplain");
        forms.push((node, link_form(node, &token, &query).await));
    }
    let uploads = forms
        .iter()
        .enumerate()
        .map(|(i, (node, (url, fields)))| async move {
            post_form(
                node,
                url,
                fields,
                &[],
                "f.txt",
                format!("file {i}").as_bytes(),
            )
            .await
        });
    let answers = futures_util::future::join_all(uploads).await;
    let stored = answers.iter().filter(|r| r.status == 201).count();
    let full: Vec<_> = answers.iter().filter(|r| r.status != 201).collect();
    assert_eq!(
        stored,
        5,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(full.len(), 15);
    for res in full {
        res.assert_error(403, "AccessDenied");
        assert!(
            res.text().contains("received all the files"),
            "{}",
            res.text()
        );
    }
    assert_eq!(cluster.keys("ups/in/").await.len(), 5);
    for node in nodes {
        assert_eq!(listed(node, &id).await["uploaded_files"], 5);
        // The page of a full link gives no more forms, on either node.
        let (res, _) = call(node, Method::GET, &format!("/-/u/{token}/policy"), None).await;
        res.assert_status(410);
    }
}

/// (b) A link made on node A works on node B; revoked on B, it refuses on A.
#[tokio::test]
async fn a_link_is_the_same_link_on_every_node() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "ups", "prefix": "b/", "max_files": 3}),
    )
    .await;
    assert_eq!(listed(&b, &id).await["uploaded_files"], 0);
    let (url, fields) = link_form(&b, &token, "?filename=one.txt&type=text%2Fplain").await;
    post_form(&b, &url, &fields, &[], "one.txt", b"through b")
        .await
        .assert_status(201);
    assert_eq!(listed(&a, &id).await["uploaded_files"], 1);
    // A form A gave out before the revocation.
    let (url, early) = link_form(&a, &token, "?filename=two.txt&type=text%2Fplain").await;
    let (res, _) = api(
        &b,
        Method::DELETE,
        &format!("/-/api/links/{id}"),
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(204);
    let (res, _) = call(&a, Method::GET, &format!("/-/u/{token}/policy"), None).await;
    res.assert_status(410);
    let res = post_form(&a, &url, &early, &[], "two.txt", b"too late").await;
    res.assert_error(403, "AccessDenied");
    assert_eq!(cluster.keys("ups/b/").await, ["ups/b/one.txt"]);
    assert_eq!(listed(&a, &id).await["revoked"], true);
}

/// (c) An object written through A is read, listed and deleted through B; a POST form signed
/// for A is accepted by B.
#[tokio::test]
async fn objects_and_forms_are_any_nodes() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "shared").await;
    let b = cluster.node("node-b", "shared").await;
    a.req(Method::PUT, "/shared/x")
        .header("x-amz-meta-from", "a")
        .body(b"written through a".to_vec())
        .send()
        .await
        .assert_status(200);
    let got = b.get("/shared/x").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"written through a");
    assert_eq!(got.header("x-amz-meta-from"), Some("a"));
    let listed = b
        .req(Method::GET, "/shared")
        .query("list-type=2")
        .send()
        .await;
    assert_eq!(xml_tags(&listed.text(), "Key"), ["x"]);
    let req = postgate::policy::PostPolicyRequest::new(
        "shared",
        postgate::policy::KeySpec::Exact("posted".into()),
        1000,
    );
    let form = postgate::policy::issue(
        &req,
        ADMIN_AK,
        ADMIN_SK,
        REGION,
        &format!("{}/shared", a.base),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let to_b = format!("{}/shared", b.base);
    post_form(&b, &to_b, &form.fields, &[], "p.txt", b"posted to b")
        .await
        .assert_status(204);
    assert_eq!(&a.get("/shared/posted").await.body[..], b"posted to b");
    b.delete("/shared/x").await.assert_status(204);
    a.get("/shared/x").await.assert_error(404, "NoSuchKey");
    assert_eq!(cluster.keys("shared/").await, ["shared/posted"]);
}

/// Node A as its own process (so that it can be SIGKILLed), `--backend s3` and `--control-db`
/// on the data directory `dir`.
async fn node_process(cluster: &Cluster, dir: &Path) -> ServerProcess {
    node_process_with(cluster, dir, &[]).await
}

/// [`node_process`] with more environment variables.
async fn node_process_with(cluster: &Cluster, dir: &Path, env: &[(&str, &str)]) -> ServerProcess {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
    cmd.envs(env.iter().copied());
    cmd.env("POSTGATE_BACKEND", "s3")
        .env("POSTGATE_BACKEND_ENDPOINT", &cluster.backend.base)
        .env("POSTGATE_BACKEND_BUCKET", CLUSTER)
        .env("POSTGATE_CONTROL_DB", &cluster.pg.url)
        .env("AWS_ACCESS_KEY_ID", ADMIN_AK)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_SK);
    start_process(cmd, dir, "warn", Duration::from_secs(30)).await
}

/// A form upload whose file never finishes: the fields and the first bytes of the file, then
/// nothing (the node has taken the link's slot by then).
async fn stalled_upload(http: reqwest::Client, url: String, fields: Vec<(String, String)>) {
    let boundary = "postgate-stalled-upload";
    let mut head = String::new();
    for (k, v) in &fields {
        head.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    head.push_str(&format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"s.txt\"\r\n\
         content-type: text/plain\r\n\r\nthe first bytes"
    ));
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(futures_util::stream::pending());
    let _ = http
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
}

use futures_util::StreamExt;

/// The page's form for file `name` from the node at `base`: (url, fields).
async fn form_at(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> (String, Vec<(String, String)>) {
    let res = http
        .get(format!(
            "{base}/-/u/{token}/policy?filename={name}&type=text%2Fplain"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let fields = json["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (json["url"].as_str().unwrap().to_owned(), fields)
}

/// (d) Node A SIGKILLed while 3 slow uploads hold slots of a link: after its restart (and the
/// settle of its own slots, HEAD in the cluster), `uploaded_files` equals the number of the
/// link's objects in the cluster.
#[tokio::test]
async fn a_killed_node_settles_its_slots_when_it_restarts() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let b = cluster.node("node-b", "ups").await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = node_process(&cluster, dir.path()).await;
    // The bucket B made is A's too.
    req_to(&a.base, &a.host, &a.http, Method::PUT, "/ups")
        .send()
        .await
        .assert_error(409, "BucketAlreadyOwnedByYou");
    let (id, token) = make_link(
        &b,
        serde_json::json!({"bucket": "ups", "prefix": "k/", "max_files": 10}),
    )
    .await;
    // One file stored through A, one through B.
    let (base, http) = (a.base.clone(), a.http.clone());
    for (node_base, name) in [(base.clone(), "done-a.txt"), (b.base.clone(), "done-b.txt")] {
        let (url, fields) = form_at(&http, &node_base, &token, name).await;
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k, v);
        }
        form = form.part("file", reqwest::multipart::Part::bytes(b"done".to_vec()));
        let res = http.post(url).multipart(form).send().await.unwrap();
        assert_eq!(res.status(), 201, "{name}");
    }
    // Three slow uploads through A.
    let mut stalled = Vec::new();
    for i in 0..3 {
        let (url, fields) = form_at(&http, &base, &token, &format!("slow-{i}.txt")).await;
        stalled.push(tokio::spawn(stalled_upload(http.clone(), url, fields)));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while listed(&b, &id).await["uploaded_files"] != 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow uploads took no slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    for s in stalled {
        let _ = s.await;
    }
    // The killed node's slots are still taken.
    assert_eq!(listed(&b, &id).await["uploaded_files"], 5);
    let _a = node_process(&cluster, dir.path()).await;
    let stored = cluster.keys("ups/k/").await;
    assert_eq!(stored, ["ups/k/done-a.txt", "ups/k/done-b.txt"]);
    assert_eq!(listed(&b, &id).await["uploaded_files"], stored.len());
}

/// Waits until node `node` counts `files` for link `id`, or fails after `within`; returns how
/// long it took.
async fn until_counted(node: &TestApp, id: &str, files: usize, within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let now = listed(node, id).await["uploaded_files"].clone();
        if now == files {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "uploaded_files is {now}, not {files}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stored form's file through `http` (a node process or another client).
async fn store_through(http: &reqwest::Client, base: &str, token: &str, name: &str) {
    let (url, fields) = form_at(http, base, token, name).await;
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k, v);
    }
    form = form.part("file", reqwest::multipart::Part::bytes(b"done".to_vec()));
    let res = http.post(url).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 201, "{name}");
}

/// Node A SIGKILLed while 3 stalled uploads hold slots of a link, and never restarted: node
/// B's sweeper gives them back once A's heartbeat expired, and the count is the link's files
/// in the cluster. Slots of a node that never wrote a heartbeat ("ghost") are settled the same
/// way: kept for a file stored there with the link's id, given back for a file without it and
/// for a missing one. While A is alive, its slots are left alone.
#[tokio::test]
async fn a_dead_nodes_slots_are_settled_by_the_others() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let expiry = Duration::from_secs(3);
    let b = cluster
        .node_beating("node-b", "ups", Duration::from_millis(300), expiry)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = node_process_with(
        &cluster,
        dir.path(),
        &[
            ("POSTGATE_NODE_HEARTBEAT", "1s"),
            ("POSTGATE_NODE_EXPIRY", "3s"),
        ],
    )
    .await;
    req_to(&a.base, &a.host, &a.http, Method::PUT, "/ups")
        .send()
        .await
        .assert_error(409, "BucketAlreadyOwnedByYou");
    let (id, token) = make_link(
        &b,
        serde_json::json!({"bucket": "ups", "prefix": "k/", "max_files": 10}),
    )
    .await;
    let (base, http) = (a.base.clone(), a.http.clone());
    store_through(&http, &base, &token, "done-a.txt").await;
    store_through(&http, &b.base, &token, "done-b.txt").await;

    // The ghost's slots: its file stored for the link (kept), a file of someone else under
    // its key (given back), no file at all (given back).
    for (key, meta) in [
        ("ghost-kept.txt", Some(id.as_str())),
        ("ghost-foreign.txt", None),
    ] {
        let mut put = cluster
            .backend
            .req(Method::PUT, &format!("/{CLUSTER}/ups/k/{key}"))
            .body(b"ghost".to_vec());
        if let Some(link) = meta {
            put = put.header("x-amz-meta-upload-link", link);
        }
        put.send().await.assert_status(200);
    }
    let ghost = postgate::control::Pg::connect(&cluster.pg.url, "ghost")
        .await
        .unwrap();
    for key in [
        "k/ghost-kept.txt",
        "k/ghost-foreign.txt",
        "k/ghost-missing.txt",
    ] {
        ghost.reserve_form(&id, "ups", key).await.unwrap().unwrap();
    }
    until_counted(&b, &id, 3, Duration::from_secs(20)).await;

    // Three stalled uploads through A, alive: their slots stay taken past the expiry.
    let mut stalled = Vec::new();
    for i in 0..3 {
        let (url, fields) = form_at(&http, &base, &token, &format!("slow-{i}.txt")).await;
        stalled.push(tokio::spawn(stalled_upload(http.clone(), url, fields)));
    }
    until_counted(&b, &id, 6, Duration::from_secs(20)).await;
    tokio::time::sleep(expiry * 2).await;
    assert_eq!(listed(&b, &id).await["uploaded_files"], 6);

    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    for s in stalled {
        let _ = s.await;
    }
    let stored = cluster.keys("ups/k/").await;
    assert_eq!(
        stored,
        [
            "ups/k/done-a.txt",
            "ups/k/done-b.txt",
            "ups/k/ghost-foreign.txt",
            "ups/k/ghost-kept.txt"
        ]
    );
    // The bound: A's last heartbeat expires within `expiry`, B's next tick settles it; the
    // rest is slack for a loaded machine.
    let took = until_counted(&b, &id, 3, Duration::from_secs(20)).await;
    eprintln!("a dead node's slots given back {took:?} after the kill (expiry {expiry:?})");
    // Settled once: the count stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(listed(&b, &id).await["uploaded_files"], 3);
}

/// A live node's upload that stalls far longer than the expiry keeps its slot (its node's
/// heartbeat goes on): the other node's sweeper never takes it, the link stays full, and the
/// upload then completes and is counted once.
#[tokio::test]
async fn a_live_nodes_long_upload_keeps_its_slot() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let (beat, expiry) = (Duration::from_millis(200), Duration::from_millis(1500));
    let a = cluster.node_beating("node-a", "ups", beat, expiry).await;
    let b = cluster.node_beating("node-b", "ups", beat, expiry).await;
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "ups", "prefix": "l/", "max_files": 1}),
    )
    .await;
    let (url, fields) = link_form(&a, &token, "?filename=long.txt&type=text%2Fplain").await;
    // A form B gives out before the link is full.
    let (b_url, b_fields) = link_form(&b, &token, "?filename=other.txt&type=text%2Fplain").await;
    let (more, rx) = tokio::sync::mpsc::channel::<String>(1);
    let boundary = "postgate-long-upload";
    let mut head = String::new();
    for (k, v) in &fields {
        head.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    head.push_str(&format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"long.txt\"\r\n\
         content-type: text/plain\r\n\r\nthe first bytes"
    ));
    let body = futures_util::stream::once(async move { head })
        .chain(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        }));
    let upload = a
        .http
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(
            body.map(Ok::<_, std::io::Error>),
        ))
        .send();
    let upload = tokio::spawn(upload);
    until_counted(&b, &id, 1, Duration::from_secs(20)).await;
    // Four expiries of stalling: B's sweeper runs some 30 times meanwhile.
    tokio::time::sleep(expiry * 4).await;
    assert_eq!(listed(&b, &id).await["uploaded_files"], 1);
    let (res, _) = call(&b, Method::GET, &format!("/-/u/{token}/policy"), None).await;
    res.assert_status(410);
    post_form(&b, &b_url, &b_fields, &[], "other.txt", b"one too many")
        .await
        .assert_error(403, "AccessDenied");
    more.send(format!(" and the rest\r\n--{boundary}--\r\n"))
        .await
        .unwrap();
    drop(more);
    let res = upload.await.unwrap().unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.text().await);
    assert_eq!(cluster.keys("ups/l/").await, ["ups/l/long.txt"]);
    for node in [&a, &b] {
        assert_eq!(listed(node, &id).await["uploaded_files"], 1);
    }
}

/// `postgate ARGS` on a node's data directory with `--control-db`: its standard output.
fn cli(cluster: &Cluster, node: &TestApp, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(node.data_dir())
        .arg("--control-db")
        .arg(&cluster.pg.url)
        .args(args)
        .env_remove("POSTGATE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "postgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sends `make()` until its answer has `status` (and S3 error `code`, when given), or fails
/// after `within`; returns how long it took.
async fn until_answer<'a, F: Fn() -> Req<'a>>(
    make: F,
    status: u16,
    code: Option<&str>,
    within: Duration,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let res = make().send().await;
        if res.status == status && (code.is_none() || res.code().as_deref() == code) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {} {:?} after {within:?}, not {status} {code:?}",
            res.status,
            res.code()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys and grants live in PostgreSQL with `--control-db`: a key made with `key create` on
/// node A's data directory signs requests node B accepts, a grant given and then narrowed on A
/// applies on B, and a key deleted on A is refused by B (403 InvalidAccessKeyId, as one node
/// answers an unknown key) within the bound of B's key cache.
#[tokio::test]
async fn keys_and_grants_are_shared_by_the_nodes() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let out = cli(&cluster, &a, &["key", "create", "shared"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .trim()
            .to_owned()
    };
    let creds = Creds::new(&field("access key:"), &field("secret key:"));
    assert!(cli(&cluster, &a, &["key", "list"]).contains(&creds.ak));
    // B knows the key (no grant yet: AccessDenied, not InvalidAccessKeyId).
    let bound = Duration::from_secs(10);
    let put_b = || {
        b.req(Method::PUT, "/ups/k1")
            .body(b"by the shared key".to_vec())
            .creds(&creds)
    };
    put_b().send().await.assert_error(403, "AccessDenied");
    // A grant given on A applies on B (and on A).
    cli(
        &cluster,
        &a,
        &["bucket", "allow", "ups", &creds.ak, "readwrite"],
    );
    let took = until_answer(put_b, 200, None, bound).await;
    eprintln!("grant applied on B {took:?} after the command");
    a.req(Method::PUT, "/ups/k2")
        .body(b"through a".to_vec())
        .creds(&creds)
        .send()
        .await
        .assert_status(200);
    // Narrowed to read on A: B refuses the write and still serves the read.
    cli(&cluster, &a, &["bucket", "allow", "ups", &creds.ak, "read"]);
    until_answer(put_b, 403, Some("AccessDenied"), bound).await;
    let got = b.req(Method::GET, "/ups/k1").creds(&creds).send().await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"by the shared key");
    // Deleted on A: refused by B.
    cli(&cluster, &a, &["key", "delete", &creds.ak]);
    let get_b = || b.req(Method::GET, "/ups/k1").creds(&creds);
    let took = until_answer(get_b, 403, Some("InvalidAccessKeyId"), bound).await;
    eprintln!("deleted key refused on B {took:?} after the command");
    assert!(!cli(&cluster, &a, &["key", "list"]).contains(&creds.ak));
    // The nodes' own admin key still works on both.
    b.get("/ups/k1").await.assert_status(200);
    a.get("/ups/k2").await.assert_status(200);
}

/// `--control-db` needs `--backend s3` (with the local store, objects are on one machine): the
/// server refuses to start, saying so, before it connects; the URL's password is never shown.
#[tokio::test]
async fn a_control_db_without_the_s3_backend_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.control_db = Some("postgres://postgate:hunter2secret@127.0.0.1:1/postgate".into());
    assert!(!format!("{config:?}").contains("hunter2secret"));
    let Err(e) = postgate::AppState::open(config).await else {
        panic!("started with --control-db over the local store");
    };
    let message = e.to_string();
    assert!(message.contains("--backend s3"), "{message}");
    assert!(!message.contains("hunter2secret"), "{message}");
}

/// A link's multipart upload (Uppy's route) takes its slot in the shared counter too: with
/// max_files = 1, an upload begun on A leaves nothing for a form on B, and B's own multipart
/// start is refused as full.
#[tokio::test]
async fn a_multipart_upload_takes_the_shared_slot() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "ups", "prefix": "m/", "max_files": 1}),
    )
    .await;
    let (url, fields) = link_form(&b, &token, "?filename=f.txt&type=text%2Fplain").await;
    let start = serde_json::json!({"filename": "big.bin", "type": "application/octet-stream"});
    let (res, json) = call(
        &a,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(start.clone()),
    )
    .await;
    res.assert_status(200);
    assert!(json["uploadId"].is_string(), "{json}");
    assert_eq!(listed(&b, &id).await["uploaded_files"], 1);
    post_form(&b, &url, &fields, &[], "f.txt", b"one too many")
        .await
        .assert_error(403, "AccessDenied");
    let (res, _) = call(
        &b,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(start),
    )
    .await;
    assert!(res.status == 410 || res.status == 403, "{}", res.text());
    assert_eq!(listed(&a, &id).await["uploaded_files"], 1);
}

/// Not a test: the time of 200 link reserves through PostgreSQL and through SQLite, printed
/// for docs/cluster.md section 4 (`cargo nextest run --test api nodes::reserve_timing
/// --run-ignored only --no-capture`, with `PG_DURABLE=1` for a PostgreSQL that fsyncs its commits
/// as SQLite does).
#[tokio::test]
#[ignore]
async fn reserve_timing() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let node = cluster.node("node-a", "ups").await;
    let local = spawn_app().await;
    local.create_bucket("ups").await;
    for (name, app) in [("postgresql", &node), ("sqlite", &local)] {
        let (id, _) = make_link(
            app,
            serde_json::json!({"bucket": "ups", "prefix": "t/", "max_files": 100000}),
        )
        .await;
        let started = std::time::Instant::now();
        for i in 0..200 {
            let slot = app
                .state
                .links
                .reserve_form(&id, "ups", &format!("t/{i}"))
                .await
                .unwrap()
                .unwrap();
            app.state.links.end_form_slot(&slot, true).await.unwrap();
        }
        let per = started.elapsed() / 200;
        eprintln!("{name}: 200 reserve + end, {per:?} each");
    }
}

/// A control database that accepts the connection and then never answers (a hung or
/// blackholed server) fails the start within seconds, instead of holding it for ever; the
/// error names no part of the URL.
#[tokio::test]
async fn a_control_db_that_never_answers_fails_within_seconds() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgate:hunter2secret@{}/postgate",
        silent.local_addr().unwrap()
    );
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        postgate::control::pg::Pg::connect(&url, "node-x"),
    )
    .await;
    let Ok(Err(e)) = outcome else {
        panic!("connecting to a silent control database did not fail within 30 s");
    };
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(!e.to_string().contains("hunter2secret"), "{e}");
    drop(silent);
}

/// Within this many seconds a change made on one node reaches the others (the periodic
/// re-read bounds it at 5 s when a notification is lost).
const BOUND: Duration = Duration::from_secs(10);

/// Buckets live in PostgreSQL with `--control-db`: a bucket created on node A is B's (PUT and
/// GET through B, B's ListBuckets; CreateBucket of the same name on B is 409
/// BucketAlreadyOwnedByYou), its lifecycle rules put on A are read back on B, and its ACL set
/// on A applies on B (public-read: an anonymous GET through B works; private again: 403).
#[tokio::test]
async fn a_bucket_made_on_one_node_is_every_nodes() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    a.req(Method::PUT, "/made-on-a")
        .send()
        .await
        .assert_status(200);
    let put_b = || {
        b.req(Method::PUT, "/made-on-a/k")
            .body(b"through b".to_vec())
    };
    let took = until_answer(put_b, 200, None, BOUND).await;
    eprintln!("with NOTIFY: a bucket made on A took PUTs on B {took:?} after");
    let got = b.get("/made-on-a/k").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"through b");
    let listed = b.get("/").await;
    listed.assert_status(200);
    assert!(
        xml_tags(&listed.text(), "Name").contains(&"made-on-a".to_owned()),
        "{}",
        listed.text()
    );
    b.req(Method::PUT, "/made-on-a")
        .send()
        .await
        .assert_error(409, "BucketAlreadyOwnedByYou");

    // Lifecycle rules put on A, read back on B.
    let rules = "<LifecycleConfiguration><Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter>\
        <Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule></LifecycleConfiguration>";
    a.req(Method::PUT, "/made-on-a")
        .query("lifecycle")
        .body(rules)
        .send()
        .await
        .assert_status(200);
    let get_rules = || b.req(Method::GET, "/made-on-a").query("lifecycle");
    until_answer(get_rules, 200, None, BOUND).await;
    let got = get_rules().send().await.text();
    assert_eq!(xml_tag(&got, "ID").as_deref(), Some("tmp"), "{got}");
    assert_eq!(xml_tag(&got, "Days").as_deref(), Some("3"), "{got}");

    // The ACL set on A applies on B.
    let acl = |canned: &'static str| {
        a.req(Method::PUT, "/made-on-a")
            .query("acl")
            .header("x-amz-acl", canned)
    };
    let anonymous = || b.req(Method::GET, "/made-on-a/k").anonymous();
    anonymous().send().await.assert_error(403, "AccessDenied");
    acl("public-read").send().await.assert_status(200);
    let took = until_answer(anonymous, 200, None, BOUND).await;
    eprintln!("with NOTIFY: public-read set on A applied on B {took:?} after");
    acl("private").send().await.assert_status(200);
    until_answer(anonymous, 403, Some("AccessDenied"), BOUND).await;
}

/// CORS rules put on node A answer node B's preflights; deleted on A, B refuses them (403).
#[tokio::test]
async fn cors_set_on_one_node_answers_the_others_preflights() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let rules = "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.test</AllowedOrigin>\
        <AllowedMethod>PUT</AllowedMethod><MaxAgeSeconds>60</MaxAgeSeconds></CORSRule></CORSConfiguration>";
    a.req(Method::PUT, "/ups")
        .query("cors")
        .body(rules)
        .send()
        .await
        .assert_status(200);
    let b = &b;
    let answer = |status: u16| async move {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let res = crate::cors::preflight(b, "/ups/k", "https://app.test", "PUT", None).await;
            if res.status == status || tokio::time::Instant::now() > deadline {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let res = answer(200).await;
    res.assert_status(200);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert!(
        res.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("PUT"))
    );
    a.req(Method::DELETE, "/ups")
        .query("cors")
        .send()
        .await
        .assert_status(204);
    answer(403).await.assert_status(403);
}

/// A notification configuration put on node A, naming a target added with `webhook add
/// --control-db` on A's data directory: an upload through node B is delivered, signed with the
/// target's secret, to a real HTTP receiver.
#[tokio::test]
async fn a_notification_put_on_one_node_fires_on_the_others() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let receiver = crate::events::Receiver::start().await;
    let secret = crate::events::SECRET;
    let out = cli(
        &cluster,
        &a,
        &[
            "webhook",
            "add",
            "hook",
            "--url",
            &receiver.url,
            "--secret",
            secret,
        ],
    );
    assert!(out.contains("arn:postgate:sqs::hook:webhook"), "{out}");
    let listed = cli(&cluster, &b, &["webhook", "list"]);
    assert!(
        listed.contains(&receiver.url) && !listed.contains(secret),
        "{listed}"
    );
    let xml = crate::events::notification_xml(
        "arn:postgate:sqs::hook:webhook",
        &["s3:ObjectCreated:*"],
        None,
    );
    a.req(Method::PUT, "/ups")
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    let deadline = tokio::time::Instant::now() + BOUND;
    while !b
        .req(Method::GET, "/ups")
        .query("notification")
        .send()
        .await
        .text()
        .contains("hook")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never had the configuration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.put_object("ups", "via-b.txt", b"hello".to_vec()).await;
    let got = receiver.wait_for(1).await;
    let r = &got[0];
    assert_eq!(r.record()["s3"]["object"]["key"], "via-b.txt");
    assert_eq!(r.record()["eventName"], "ObjectCreated:Put");
    let ts: i64 = r.timestamp.parse().unwrap();
    assert_eq!(r.signature, postgate::events::sign(secret, ts, &r.body));
    assert!(cli(&cluster, &a, &["webhook", "remove", "hook"]).contains("removed"));
}

/// DeleteBucket on node A of a bucket holding an object written through node B: 409
/// BucketNotEmpty (the backend is asked, not A's SQLite); once the object is deleted, 204, and
/// B answers NoSuchBucket; a backend that cannot answer gets 503 ServiceUnavailable.
#[tokio::test]
async fn a_bucket_is_deleted_only_when_empty_in_the_backend() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    a.req(Method::PUT, "/gone").send().await.assert_status(200);
    let put_b = || b.req(Method::PUT, "/gone/k").body(b"by b".to_vec());
    until_answer(put_b, 200, None, BOUND).await;
    a.req(Method::DELETE, "/gone")
        .send()
        .await
        .assert_error(409, "BucketNotEmpty");
    a.delete("/gone/k").await.assert_status(204);
    a.req(Method::DELETE, "/gone")
        .send()
        .await
        .assert_status(204);
    let get_b = || b.req(Method::GET, "/gone/k");
    until_answer(get_b, 404, Some("NoSuchBucket"), BOUND).await;
    a.req(Method::DELETE, "/gone")
        .send()
        .await
        .assert_error(404, "NoSuchBucket");
    // A backend that cannot answer: 503, and the bucket stays.
    a.req(Method::PUT, "/kept").send().await.assert_status(200);
    let Cluster { backend, pg: _pg } = cluster;
    backend.stop().await;
    a.req(Method::DELETE, "/kept")
        .send()
        .await
        .assert_error(503, "ServiceUnavailable");
    a.req(Method::HEAD, "/kept").send().await.assert_status(200);
}

/// A lost notification is bounded: node B does not listen, and a change made on A still
/// reaches it within the periodic re-read (5 s).
#[tokio::test]
async fn a_lost_notification_is_bounded_by_the_periodic_read() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster
        .node_with("node-b", "ups", |config| config.control_listen = false)
        .await;
    a.put_object("ups", "k", b"public soon".to_vec()).await;
    let anonymous = || b.req(Method::GET, "/ups/k").anonymous();
    anonymous().send().await.assert_error(403, "AccessDenied");
    a.req(Method::PUT, "/ups")
        .query("acl")
        .header("x-amz-acl", "public-read")
        .send()
        .await
        .assert_status(200);
    let took = until_answer(anonymous, 200, None, BOUND).await;
    eprintln!("without NOTIFY: public-read set on A applied on B {took:?} after");
    assert!(took < Duration::from_secs(7), "{took:?}");
    a.req(Method::PUT, "/made-later")
        .send()
        .await
        .assert_status(200);
    let put_b = || b.req(Method::PUT, "/made-later/k").body(b"x".to_vec());
    let took = until_answer(put_b, 200, None, BOUND).await;
    eprintln!("without NOTIFY: a bucket made on A took PUTs on B {took:?} after");
    assert!(took < Duration::from_secs(7), "{took:?}");
}

/// A node that had buckets of its own before `--control-db` shares them once: its bucket
/// appears in PostgreSQL (node B uses it); deleted on B while the node is down, it does not
/// come back when the node restarts (`control-config-seeded`).
#[tokio::test]
async fn a_nodes_own_buckets_are_seeded_once() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let before = spawn_app_with(|config| cluster.on_backend(config)).await;
    before.create_bucket("old").await;
    let dir = before.stop().await;
    let a = spawn_app_in_with(dir, |config| cluster.as_node("node-a", config)).await;
    assert!(a.data_dir().join("control-config-seeded").exists());
    let b = cluster.node("node-b", "ups").await;
    let listed = cli(&cluster, &b, &["bucket", "list"]);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("old ")).count(),
        1,
        "{listed}"
    );
    b.put_object("old", "x", b"from b".to_vec()).await;
    // Deleted on B while A is down: A's SQLite still has the bucket when it restarts.
    let dir = a.stop().await;
    b.delete("/old/x").await.assert_status(204);
    b.req(Method::DELETE, "/old")
        .send()
        .await
        .assert_status(204);
    let a = spawn_app_in_with(dir, |config| cluster.as_node("node-a", config)).await;
    a.req(Method::GET, "/old/x")
        .send()
        .await
        .assert_error(404, "NoSuchBucket");
    b.req(Method::GET, "/old/x")
        .send()
        .await
        .assert_error(404, "NoSuchBucket");
    assert!(!cli(&cluster, &b, &["bucket", "list"]).contains("old "));
}

/// Announces every create and remove in `bucket` to `receiver` through target `hook`: the
/// target is written to the control database and the configuration put through `node`, so
/// every node has both (this node at once, the others on the change's notification).
async fn notify_to(node: &TestApp, bucket: &str, receiver: &Receiver) {
    notify_to_url(node, bucket, &receiver.url, 1).await;
}

/// [`notify_to`] a URL, with target `hook` declared with `--batch`.
async fn notify_to_url(node: &TestApp, bucket: &str, url: &str, batch: u32) {
    let hook = postgate::db::events::WebhookRecord {
        name: "hook".into(),
        url: url.into(),
        secret: SECRET.into(),
        batch,
    };
    let pg = node.state.links.shared().expect("a node of the cluster");
    pg.put_webhook(&hook).await.unwrap();
    node.req(Method::PUT, &format!("/{bucket}"))
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    node.state.refresh_config().await.unwrap();
}

/// The received events as (event name, key), in arrival order, each signature checked.
fn events_of(got: &[Received]) -> Vec<(String, String)> {
    got.iter()
        .map(|r| {
            let timestamp: i64 = r.timestamp.parse().unwrap();
            assert_eq!(
                r.signature,
                postgate::events::sign(SECRET, timestamp, &r.body),
                "the signature verifies"
            );
            let record = r.record();
            (
                record["eventName"].as_str().unwrap().to_owned(),
                record["s3"]["object"]["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Events written through either node go to the shared outbox and arrive once each, signed,
/// whichever node's worker sends them: a PUT through A, a PUT through B, a link form through
/// B (its event written with the end of its slot).
#[tokio::test]
async fn each_nodes_events_arrive_once_from_the_shared_outbox() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "evt").await;
    let b = cluster.node("node-b", "evt").await;
    let receiver = Receiver::start().await;
    notify_to(&a, "evt", &receiver).await;
    notify_to(&b, "evt", &receiver).await;
    a.put_object("evt", "from-a", b"a".to_vec()).await;
    b.put_object("evt", "from-b", b"b".to_vec()).await;
    let (id, token) = make_link(&b, serde_json::json!({"bucket": "evt", "prefix": "l/"})).await;
    store_through(&b.http, &b.base, &token, "form.txt").await;
    receiver.wait_for(3).await;
    // Time for a second delivery by the other node's worker, if there were one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got = events_of(&receiver.got.lock().unwrap().clone());
    got.sort();
    assert_eq!(
        got,
        [
            ("ObjectCreated:Post".to_owned(), "l/form.txt".to_owned()),
            ("ObjectCreated:Put".to_owned(), "from-a".to_owned()),
            ("ObjectCreated:Put".to_owned(), "from-b".to_owned()),
        ]
    );
    assert_eq!(listed(&a, &id).await["uploaded_files"], 1);
    // Nothing pending anywhere, nothing in the nodes' own outboxes.
    for node in [&a, &b] {
        assert_eq!(node.state.events.pending(&node.state.db).await.unwrap(), 0);
    }
}

/// A target declared with `--batch 8` in the control database, whose receiver was down while
/// both nodes wrote 12 events to the shared outbox, gets them in POSTs of up to 8 records, each
/// signed over its whole body with `X-Postgate-Delivery` naming its records; every event arrives.
#[tokio::test]
async fn a_batched_target_gets_the_shared_outboxs_backlog_in_few_posts() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let quick = |config: &mut postgate::Config| {
        config.event_retry_min = Duration::from_millis(200);
    };
    let a = cluster.node_with("node-a", "bat", quick).await;
    let b = cluster.node_with("node-b", "bat", quick).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    notify_to_url(&a, "bat", &format!("http://{addr}/hook"), 8).await;
    b.state.refresh_config().await.unwrap();
    for i in 0..6 {
        a.put_object("bat", &format!("a-{i}"), b"a".to_vec()).await;
        b.put_object("bat", &format!("b-{i}"), b"b".to_vec()).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let receiver = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap());
    let posts = wait_for_records(&receiver, 12).await;
    let mut keys: Vec<String> = records(&posts)
        .iter()
        .map(|r| r["s3"]["object"]["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 12, "{keys:?}");
    for p in &posts {
        let n = p.json["Records"].as_array().unwrap().len();
        assert!((1..=8).contains(&n), "{n} records in one POST");
        assert_eq!(p.delivery.split(',').count(), n);
        let timestamp: i64 = p.timestamp.parse().unwrap();
        assert_eq!(
            p.signature,
            postgate::events::sign(SECRET, timestamp, &p.body)
        );
    }
    assert!(
        posts.len() < 12,
        "{} POSTs for 12 events: none carried more than one",
        posts.len()
    );
}

/// A link made on node A with a webhook hears of its uploads through every node: through B,
/// which does not listen for notifications (it reads the configuration again for a link so
/// young whose webhook it does not know), at once; C, which listens, has the link's webhook
/// on the link's notification, within 1 s (the periodic re-read is every 5 s).
#[tokio::test]
async fn a_links_webhook_hears_its_uploads_through_every_node() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "lwh").await;
    let b = cluster
        .node_with("node-b", "lwh", |config| config.control_listen = false)
        .await;
    let c = cluster.node("node-c", "lwh").await;
    let receiver = Receiver::start().await;
    let hook = postgate::db::events::WebhookRecord {
        name: "hook".into(),
        url: receiver.url.clone(),
        secret: SECRET.into(),
        batch: 1,
    };
    let pg = a.state.links.shared().expect("a node of the cluster");
    pg.put_webhook(&hook).await.unwrap();
    a.state.refresh_config().await.unwrap();
    let made = tokio::time::Instant::now();
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "lwh", "prefix": "l/", "webhook": "hook"}),
    )
    .await;
    while c.state.events.link_target(&id).is_none() {
        assert!(
            made.elapsed() < Duration::from_secs(1),
            "C never had the link's webhook"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "with NOTIFY: the link's webhook reached node C {:?} after the link was made",
        made.elapsed()
    );
    store_through(&b.http, &b.base, &token, "via-b.txt").await;
    store_through(&a.http, &a.base, &token, "via-a.txt").await;
    let got = receiver.wait_for(2).await;
    let mut keys: Vec<String> = got
        .iter()
        .map(|r| {
            let record = r.record();
            assert_eq!(record["eventName"], "ObjectCreated:Post");
            assert_eq!(record["postgate"]["linkId"], id.as_str());
            record["s3"]["object"]["key"].as_str().unwrap().to_owned()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["l/via-a.txt", "l/via-b.txt"]);
    assert_eq!(events_of(&got).len(), 2, "signed");
    assert_eq!(listed(&b, &id).await["webhook"], "hook");
}

/// Node B's reads of the shared configuration, from its `/-/metrics`.
async fn config_reads(node: &TestApp) -> u64 {
    node.get("/-/metrics")
        .await
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("postgate_control_config_reads_total "))
        .expect("the config reads counter")
        .trim()
        .parse()
        .unwrap()
}

/// 100 page loads at once, on node B, of a link node A made a moment ago (B hears of it by its
/// own reads only): B reads the shared configuration once or twice for the whole burst, not
/// once per load (serialised: the last load waited for all of them), and then knows the link's
/// webhook. Each load is answered 200.
#[tokio::test]
async fn a_burst_on_a_new_link_reads_the_shared_configuration_once_or_twice() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "burst").await;
    let b = cluster
        .node_with("node-b", "burst", |config| config.control_listen = false)
        .await;
    let receiver = Receiver::start().await;
    let hook = postgate::db::events::WebhookRecord {
        name: "hook".into(),
        url: receiver.url.clone(),
        secret: SECRET.into(),
        batch: 1,
    };
    let pg = a.state.links.shared().expect("a node of the cluster");
    pg.put_webhook(&hook).await.unwrap();
    b.state.refresh_config().await.unwrap();
    let before = config_reads(&b).await;
    let (id, token) = make_link(
        &a,
        serde_json::json!({"bucket": "burst", "prefix": "p/", "webhook": "hook"}),
    )
    .await;
    let started = std::time::Instant::now();
    let loads = (0..100).map(|_| {
        let (http, url) = (b.http.clone(), format!("{}/-/u/{token}", b.base));
        tokio::spawn(async move { http.get(url).send().await.unwrap().status().as_u16() })
    });
    for load in futures_util::future::join_all(loads).await {
        assert_eq!(load.unwrap(), 200);
    }
    let took = started.elapsed();
    let reads = config_reads(&b).await - before;
    eprintln!("100 page loads on a new link: {reads} reads of the shared configuration, {took:?}");
    // One for the burst, one more for loads that came during it, one from B's periodic read.
    assert!((1..=3).contains(&reads), "{reads} reads for 100 loads");
    assert_eq!(b.state.events.link_target(&id).as_deref(), Some("hook"));
}

/// One key's events through two nodes arrive in the order they were made: PUT (A), DELETE (B),
/// PUT (A), while the receiver refuses the first attempt (the later ones wait for it). With an
/// outbox per node, B sent its DELETE at once, before A's retry of the first PUT.
#[tokio::test]
async fn a_keys_events_through_two_nodes_arrive_in_order() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ord").await;
    let b = cluster.node("node-b", "ord").await;
    let receiver = Receiver::start().await;
    receiver.fail.store(1, std::sync::atomic::Ordering::SeqCst);
    notify_to(&a, "ord", &receiver).await;
    notify_to(&b, "ord", &receiver).await;
    a.put_object("ord", "k", b"one".to_vec()).await;
    b.delete("/ord/k").await.assert_status(204);
    a.put_object("ord", "k", b"two".to_vec()).await;
    let got = receiver.wait_for(3).await;
    assert_eq!(
        events_of(&got),
        [
            ("ObjectCreated:Put".to_owned(), "k".to_owned()),
            ("ObjectRemoved:Delete".to_owned(), "k".to_owned()),
            ("ObjectCreated:Put".to_owned(), "k".to_owned()),
        ]
    );
    assert_eq!(got[0].record()["s3"]["object"]["eTag"], md5_hex(b"one"));
    assert_eq!(got[2].record()["s3"]["object"]["eTag"], md5_hex(b"two"));
    assert_eq!(receiver.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}

/// Node A (a process, `--event-lease 4s`) takes an event and is SIGKILLed while its attempt
/// stalls at the receiver: node B sends it once A's lease ran out, never before, and once.
#[tokio::test]
async fn a_killed_nodes_leased_events_are_sent_by_another_after_the_lease() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let lease = Duration::from_secs(4);
    let receiver = Receiver::start().await;
    receiver.stall.store(1, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["webhook", "add", "hook", "--url", &receiver.url])
        .args(["--secret", SECRET])
        .env_remove("POSTGATE_CONFIG")
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let mut a = node_process_with(&cluster, dir.path(), &[("POSTGATE_EVENT_LEASE", "4s")]).await;
    let to_a = |method: Method, path: &str| req_to(&a.base, &a.host, &a.http, method, path);
    to_a(Method::PUT, "/evt").send().await.assert_status(200);
    to_a(Method::PUT, "/evt")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    to_a(Method::PUT, "/evt/k")
        .body(b"v".to_vec())
        .send()
        .await
        .assert_status(200);
    assert!(
        poll_until(Duration::from_secs(10), || receiver
            .hits
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
        .await,
        "node A sends the event"
    );
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let b = cluster
        .node_with("node-b", "evt", |config| config.event_lease = lease)
        .await;
    // The target added on A's data directory before its first start was shared then.
    b.state.refresh_config().await.unwrap();
    let got = receiver.wait_for(1).await;
    let hit_at = receiver.hit_at.lock().unwrap().clone();
    let took = hit_at[1] - hit_at[0];
    eprintln!(
        "node B sent the killed node's event {took:?} after its attempt began (lease {lease:?})"
    );
    assert!(
        took >= lease - Duration::from_millis(300),
        "sent within the lease: {took:?}"
    );
    assert!(took < lease + Duration::from_secs(5), "{took:?}");
    assert_eq!(
        events_of(&got),
        [("ObjectCreated:Put".to_owned(), "k".to_owned())]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1, "sent once");
    assert_eq!(receiver.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The operator sees the shared outbox from any node: a dead delivery written through A is
/// listed by `postgate events list --failed --control-db` and by B's JSON API, and B's API
/// puts it back in the queue, from where it is delivered.
#[tokio::test]
async fn the_cli_and_api_list_and_retry_the_shared_outbox() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let short = |config: &mut postgate::Config| {
        config.event_max_age = Duration::from_millis(500);
        config.event_retry_min = Duration::from_millis(100);
    };
    let a = cluster.node_with("node-a", "dead", short).await;
    let b = cluster.node_with("node-b", "dead", short).await;
    let receiver = Receiver::start().await;
    receiver
        .status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    notify_to(&a, "dead", &receiver).await;
    notify_to(&b, "dead", &receiver).await;
    a.put_object("dead", "k", b"v".to_vec()).await;
    let creds = (ADMIN_AK, ADMIN_SK);
    let dead = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (res, json) = api(
                &b,
                Method::GET,
                "/-/api/events?failed=1",
                creds,
                serde_json::Value::Null,
            )
            .await;
            res.assert_status(200);
            let events = json["events"].as_array().unwrap().clone();
            if events.first().is_some_and(|e| e["state"] == "dead") {
                break events;
            }
            assert!(tokio::time::Instant::now() < deadline, "not dead: {json}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "k");
    assert!(dead[0]["last_error"].as_str().unwrap().contains("500"));
    let id = dead[0]["id"].as_i64().unwrap();
    let listed = cli(&cluster, &a, &["events", "list", "--failed"]);
    assert!(
        listed.lines().any(|l| l.starts_with(&format!("{id} "))
            && l.contains("dead")
            && l.contains("dead/k")),
        "{listed}"
    );
    receiver
        .status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let (res, _) = api(
        &b,
        Method::POST,
        &format!("/-/api/events/{id}/retry"),
        creds,
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(204);
    let got = receiver.wait_for(1).await;
    assert_eq!(
        events_of(&got),
        [("ObjectCreated:Put".to_owned(), "k".to_owned())]
    );
    // Recorded as delivered: no longer listed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed = cli(&cluster, &b, &["events", "list"]);
        if listed.lines().count() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A link form's event is keyed by its slot and written with the slot's end: a second write of
/// it (a slow node and a sweeper both settling the upload) adds no row, and the slot, ended as
/// stored, is not given back by a later end.
#[tokio::test]
async fn a_second_write_of_a_slots_event_is_a_no_op() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "dup").await;
    let (id, _) = make_link(&a, serde_json::json!({"bucket": "dup", "prefix": "d/"})).await;
    let pg = postgate::control::Pg::connect(&cluster.pg.url, "test")
        .await
        .unwrap();
    let slot = pg.reserve_form(&id, "dup", "d/f").await.unwrap().unwrap();
    let event = postgate::control::pg::NewEvent {
        dedupe: slot.clone(),
        bucket: "dup".into(),
        key: "d/f".into(),
        name: "ObjectCreated:Post".into(),
        fields: Default::default(),
        targets: vec![
            ("hook".into(), "cfg".into()),
            ("other".into(), "cfg".into()),
        ],
    };
    for _ in 0..2 {
        pg.insert_events(std::slice::from_ref(&event), Some(&slot))
            .await
            .unwrap();
    }
    let rows = pg.list_events(false, 10).await.unwrap();
    assert_eq!(rows.len(), 2, "one row per target: {rows:?}");
    pg.end_form_slot(&slot, false).await.unwrap();
    assert_eq!(listed(&a, &id).await["uploaded_files"], 1);
}

/// What the shared outbox costs, for docs/cluster.md section 5 (`cargo nextest run --test api
/// nodes::outbox_timing --run-ignored only --no-capture`): one `insert_events` (one event, one
/// target), and a PUT through a node into a bucket whose events go to a target against one
/// into a bucket without notifications.
#[tokio::test]
#[ignore]
async fn outbox_timing() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let node = cluster.node("node-a", "quiet").await;
    node.create_bucket("loud").await;
    // The node's worker delivers the events beside the PUTs (in the measured time too).
    let receiver = Receiver::start().await;
    notify_to(&node, "loud", &receiver).await;
    let pg = postgate::control::Pg::connect(&cluster.pg.url, "timing")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..200 {
        let event = postgate::control::pg::NewEvent {
            dedupe: format!("t{i}"),
            bucket: "timing".into(),
            key: format!("k{i}"),
            name: "ObjectCreated:Put".into(),
            fields: Default::default(),
            targets: vec![("nobody".into(), "cfg".into())],
        };
        pg.insert_events(&[event], None).await.unwrap();
    }
    eprintln!("insert_events: {:?} each", started.elapsed() / 200);
    for round in 0..2 {
        for bucket in ["quiet", "loud"] {
            let started = std::time::Instant::now();
            for i in 0..100 {
                node.put_object(bucket, &format!("{round}-{i}"), b"x".to_vec())
                    .await;
            }
            eprintln!("PUT into {bucket}: {:?} each", started.elapsed() / 100);
        }
    }
}

/// A link form's file whose node stopped after the backend stored it and before its event was
/// written (a "ghost" node that never sent a heartbeat, holding the slot of a stored file and of
/// a missing one): another node's sweeper keeps the first slot and writes its event, once, and
/// gives the second back without one.
#[tokio::test]
async fn the_sweeper_writes_the_event_a_dead_node_owed() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let b = cluster
        .node_beating(
            "node-b",
            "ups",
            Duration::from_millis(300),
            Duration::from_secs(3),
        )
        .await;
    let receiver = Receiver::start().await;
    notify_to(&b, "ups", &receiver).await;
    let (id, _) = make_link(&b, serde_json::json!({"bucket": "ups", "prefix": "g/"})).await;
    cluster
        .backend
        .req(Method::PUT, &format!("/{CLUSTER}/ups/g/stored.txt"))
        .header("x-amz-meta-upload-link", &id)
        .body(b"ghost".to_vec())
        .send()
        .await
        .assert_status(200);
    let ghost = postgate::control::Pg::connect(&cluster.pg.url, "ghost")
        .await
        .unwrap();
    for key in ["g/stored.txt", "g/missing.txt"] {
        ghost.reserve_form(&id, "ups", key).await.unwrap().unwrap();
    }
    let got = receiver.wait_for(1).await;
    let record = got[0].record();
    assert_eq!(
        events_of(&got),
        [("ObjectCreated:Post".to_owned(), "g/stored.txt".to_owned())]
    );
    assert_eq!(record["s3"]["object"]["size"], 5);
    assert_eq!(record["postgate"]["linkId"], id.as_str());
    assert_eq!(record["userIdentity"]["principalId"], ADMIN_AK);
    until_counted(&b, &id, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1, "written once");
    assert_eq!(listed(&b, &id).await["uploaded_files"], 1);
}

/// With PostgreSQL stopped, an upload through a node is still answered 200 and its event is
/// still delivered: the rows the shared outbox refused go to the node's own SQLite outbox,
/// which the node delivers itself.
#[tokio::test]
async fn events_the_control_db_refuses_are_kept_and_sent_by_the_node() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "gone").await;
    let receiver = Receiver::start().await;
    notify_to(&a, "gone", &receiver).await;
    let stopped = std::process::Command::new(script())
        .arg("stop")
        .arg(cluster.pg.dir.path())
        .status()
        .unwrap();
    assert!(stopped.success());
    a.put_object("gone", "k", b"v".to_vec()).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(
        events_of(&got),
        [("ObjectCreated:Put".to_owned(), "k".to_owned())]
    );
}

/// The multipart uploads of the cluster's bucket in the backend (`(backend key, id)`).
async fn backend_uploads(cluster: &Cluster) -> Vec<(String, String)> {
    crate::multipart::list_uploads(&cluster.backend, CLUSTER, "").await
}

/// ListParts' `(PartNumber, Size, ETag)` of an upload, through `node`.
async fn parts_of(node: &TestApp, bucket: &str, key: &str, id: &str) -> Vec<(u32, u64, String)> {
    let res = crate::multipart::list_parts(node, bucket, key, id).await;
    res.assert_status(200);
    let text = res.text();
    let numbers = xml_tags(&text, "PartNumber");
    let sizes = xml_tags(&text, "Size");
    let etags = xml_tags(&text, "ETag");
    assert!(
        numbers.len() == sizes.len() && sizes.len() == etags.len(),
        "{text}"
    );
    (0..numbers.len())
        .map(|i| {
            (
                numbers[i].parse().unwrap(),
                sizes[i].parse().unwrap(),
                unescape(&etags[i]),
            )
        })
        .collect()
}

/// An upload's id as ListMultipartUploads of `node` lists it under `key`, if it does.
async fn listed_upload(node: &TestApp, bucket: &str, key: &str) -> Vec<String> {
    crate::multipart::list_uploads(node, bucket, "")
        .await
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, id)| id)
        .collect()
}

/// A multipart upload through one load-balanced address: created on A, part 1 on A, part 2 on
/// B; ListParts and ListMultipartUploads agree on both nodes; Complete on B makes the object
/// with Create's headers, readable through A, and leaves no upload anywhere (nodes, backend).
#[tokio::test]
async fn a_multipart_upload_begun_on_one_node_completes_on_another() {
    use crate::multipart::{MIB, complete, create_with, multipart_etag, upload_part};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "mpu").await;
    let b = cluster.node("node-b", "mpu").await;
    let id = create_with(
        &a,
        "mpu",
        "dir/big.bin",
        &[
            ("content-type", "application/x-test"),
            ("x-amz-meta-colour", "teal"),
        ],
    )
    .await;
    let one = pattern(5 * MIB, 7);
    let two = b"and the tail".to_vec();
    let e1 = upload_part(&a, "mpu", "dir/big.bin", &id, 1, &one).await;
    let e2 = upload_part(&b, "mpu", "dir/big.bin", &id, 2, &two).await;
    let want = vec![
        (1, one.len() as u64, e1.clone()),
        (2, two.len() as u64, e2.clone()),
    ];
    assert_eq!(parts_of(&b, "mpu", "dir/big.bin", &id).await, want);
    assert_eq!(parts_of(&a, "mpu", "dir/big.bin", &id).await, want);
    assert_eq!(listed_upload(&a, "mpu", "dir/big.bin").await, [id.as_str()]);
    assert_eq!(listed_upload(&b, "mpu", "dir/big.bin").await, [id.as_str()]);
    assert_eq!(backend_uploads(&cluster).await.len(), 1);

    let done = complete(&b, "mpu", "dir/big.bin", &id, &[(1, &e1), (2, &e2)]).await;
    done.assert_status(200);
    let etag = multipart_etag(&[&one, &two]);
    assert_eq!(
        xml_tag(&done.text(), "ETag").map(|e| unescape(&e)),
        Some(etag.clone())
    );
    let got = a.get("/mpu/dir/big.bin").await;
    got.assert_status(200);
    assert!(got.body == [one.as_slice(), two.as_slice()].concat());
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert_eq!(got.header("content-type"), Some("application/x-test"));
    assert_eq!(got.header("x-amz-meta-colour"), Some("teal"));
    assert!(listed_upload(&a, "mpu", "dir/big.bin").await.is_empty());
    assert!(listed_upload(&b, "mpu", "dir/big.bin").await.is_empty());
    assert!(backend_uploads(&cluster).await.is_empty());
}

/// Abort through B of an upload created through A: 204; then A knows no such upload, and the
/// backend's upload is gone.
#[tokio::test]
async fn an_upload_aborted_on_one_node_is_gone_on_the_others() {
    use crate::multipart::{MIB, abort, create_with, upload_part, upload_part_req};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "mpu").await;
    let b = cluster.node("node-b", "mpu").await;
    let id = create_with(&a, "mpu", "gone.bin", &[]).await;
    upload_part(&a, "mpu", "gone.bin", &id, 1, &pattern(5 * MIB, 3)).await;
    assert_eq!(backend_uploads(&cluster).await.len(), 1);
    abort(&b, "mpu", "gone.bin", &id).await.assert_status(204);
    upload_part_req(&a, "mpu", "gone.bin", &id, "2", b"late")
        .await
        .assert_error(404, "NoSuchUpload");
    crate::multipart::list_parts(&a, "mpu", "gone.bin", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    abort(&a, "mpu", "gone.bin", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    assert!(backend_uploads(&cluster).await.is_empty());
}

/// The sweep of orphan backend uploads on B (`--multipart-expiry` of 1 ms: every backend upload
/// no row names is an orphan to it) spares the live upload A began: the rows it reads are the
/// ones every node shares.
#[tokio::test]
async fn another_nodes_orphan_sweep_spares_a_live_upload() {
    use crate::multipart::{MIB, complete, create_with, upload_part};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "mpu").await;
    let b = cluster
        .node_with("node-b", "mpu", |config| {
            config.multipart_expiry = Duration::from_millis(1);
        })
        .await;
    // B's own sweeps at start are over before the upload begins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = create_with(&a, "mpu", "live.bin", &[]).await;
    let one = pattern(5 * MIB, 5);
    let e1 = upload_part(&a, "mpu", "live.bin", &id, 1, &one).await;
    let e2 = upload_part(&a, "mpu", "live.bin", &id, 2, b"end").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.state.sweep_backend_uploads().await;
    assert_eq!(backend_uploads(&cluster).await.len(), 1);
    complete(&a, "mpu", "live.bin", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let got = a.get("/mpu/live.bin").await;
    got.assert_status(200);
    assert_eq!(got.body.len(), one.len() + 3);
}

/// Two Completes of one upload racing through A and B: both answer 200 with the one object's
/// ETag (S3's answer to a repeated Complete; the row is removed by one of them only), the
/// object is the upload's bytes, and no upload is left. Several rounds, to meet the race.
#[tokio::test]
async fn two_completes_racing_through_two_nodes_make_one_object() {
    use crate::multipart::{MIB, assert_both_completed, complete, create_with, upload_part};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "mpu").await;
    let b = cluster.node("node-b", "mpu").await;
    let one = pattern(5 * MIB, 9);
    for round in 0..4 {
        let key = format!("race-{round}.bin");
        let tail = format!("tail {round}").into_bytes();
        let id = create_with(&a, "mpu", &key, &[]).await;
        let e1 = upload_part(&a, "mpu", &key, &id, 1, &one).await;
        let e2 = upload_part(&b, "mpu", &key, &id, 2, &tail).await;
        let parts = [(1, e1.as_str()), (2, e2.as_str())];
        let (ra, rb) = tokio::join!(
            complete(&a, "mpu", &key, &id, &parts),
            complete(&b, "mpu", &key, &id, &parts)
        );
        assert_both_completed([&ra, &rb], &b, &format!("/mpu/{key}"), &[&one, &tail]).await;
        assert!(listed_upload(&a, "mpu", &key).await.is_empty());
    }
    assert!(backend_uploads(&cluster).await.is_empty());
}

/// A link's multipart upload (Uppy's routes) begun on A, its parts signed and sent through A
/// and B, listed and completed through B; a second upload of the same name begun through B
/// meanwhile gets the next free name, and is aborted through A.
#[tokio::test]
async fn a_links_multipart_upload_begun_on_one_node_completes_on_another() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    let (_, token) = make_link(
        &a,
        serde_json::json!({"bucket": "ups", "prefix": "u/", "max_size": 6 << 20}),
    )
    .await;
    let (res, created) = call(
        &a,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "clip.mp4", "type": "video/mp4"})),
    )
    .await;
    res.assert_status(200);
    let upload_id = created["uploadId"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(key, "u/clip.mp4");
    // The same name begun through B while A's upload holds it: the next free name.
    let (res, second) = call(
        &b,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "clip.mp4", "type": "video/mp4"})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(second["key"], "u/clip (2).mp4");
    let key_q = format!("key={}", key.replace('/', "%2F"));
    let first = pattern(5 << 20, 11);
    let last = b"the end".to_vec();
    let mut etags = Vec::new();
    let sign = |node, n| {
        let path = format!("/-/u/{token}/s3/multipart/{upload_id}/{n}?{key_q}");
        async move {
            let (res, signed) = call(node, Method::GET, &path, None).await;
            res.assert_status(200);
            signed["url"].as_str().unwrap().to_owned()
        }
    };
    for (n, node, bytes) in [(1, &a, &first), (2, &b, &last)] {
        let url = sign(node, n).await;
        let put = node.send_url(Method::PUT, &url, bytes.clone()).await;
        put.assert_status(200);
        etags.push(put.header("etag").unwrap().trim_matches('"').to_owned());
        if n == 1 {
            // The link's 6 MiB hold across nodes: B counts the part A recorded.
            let url = sign(&b, 3).await;
            b.send_url(Method::PUT, &url, vec![b'z'; (1 << 20) + 1])
                .await
                .assert_error(400, "EntityTooLarge");
        }
    }
    let (res, listed) = call(
        &b,
        Method::GET,
        &format!("/-/u/{token}/s3/multipart/{upload_id}?{key_q}"),
        None,
    )
    .await;
    res.assert_status(200);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let (res, done) = call(
        &b,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart/{upload_id}/complete?{key_q}"),
        Some(serde_json::json!({"parts": [
            {"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}
        ]})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(done["key"], key.as_str());
    let got = a.get(&format!("/ups/{key}")).await;
    got.assert_status(200);
    assert!(got.body == [first.as_slice(), last.as_slice()].concat());
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    // The second upload, begun through B, aborted through A.
    let (res, _) = call(
        &a,
        Method::DELETE,
        &format!(
            "/-/u/{token}/s3/multipart/{}?key=u%2Fclip%20(2).mp4",
            second["uploadId"].as_str().unwrap()
        ),
        None,
    )
    .await;
    res.assert_status(204);
    assert!(backend_uploads(&cluster).await.is_empty());
}

/// A node restart loses no shared upload: begun through A, A stops; B takes part 2; A starts
/// again on its data directory (its start-up sweeps run) and completes the upload.
#[tokio::test]
async fn a_shared_upload_survives_its_nodes_restart() {
    use crate::multipart::{MIB, complete, create_with, upload_part};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "mpu").await;
    let b = cluster.node("node-b", "mpu").await;
    let id = create_with(&a, "mpu", "kept.bin", &[]).await;
    let one = pattern(5 * MIB, 13);
    let e1 = upload_part(&a, "mpu", "kept.bin", &id, 1, &one).await;
    let dir = a.stop().await;
    let e2 = upload_part(&b, "mpu", "kept.bin", &id, 2, b"after").await;
    let a = spawn_app_in_with(dir, |config| cluster.as_node("node-a", config)).await;
    assert_eq!(parts_of(&a, "mpu", "kept.bin", &id).await.len(), 2);
    complete(&a, "mpu", "kept.bin", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let got = b.get("/mpu/kept.bin").await;
    got.assert_status(200);
    assert!(got.body == [one.as_slice(), b"after"].concat());
}

/// Not a test: the time of UploadPart (5 MiB, over the same backend) with the upload's rows in
/// PostgreSQL and in the node's SQLite, printed for docs/cluster.md section 4
/// (`cargo nextest run --test api nodes::part_timing --run-ignored only --no-capture`).
#[tokio::test]
#[ignore]
async fn part_timing() {
    use crate::multipart::{MIB, abort, create_with, upload_part};
    let Some(cluster) = cluster().await else {
        return;
    };
    let shared = cluster.node("node-a", "mpu").await;
    let local = spawn_app_with(|config| cluster.on_backend(config)).await;
    ensure_bucket(&local, "mpt").await;
    let body = pattern(5 * MIB, 1);
    const PARTS: u32 = 20;
    for round in 0..2 {
        for (name, app, bucket) in [("postgresql", &shared, "mpu"), ("sqlite", &local, "mpt")] {
            let id = create_with(app, bucket, "timed.bin", &[]).await;
            let started = std::time::Instant::now();
            for n in 1..=PARTS {
                upload_part(app, bucket, "timed.bin", &id, n, &body).await;
            }
            let per = started.elapsed() / PARTS;
            let rows = std::time::Instant::now();
            for _ in 0..PARTS {
                app.state.uploads.parts(&id, 0, 10_000).await.unwrap();
            }
            let read = rows.elapsed() / PARTS;
            eprintln!(
                "round {round} {name}: UploadPart of 5 MiB {per:?} each; reading {PARTS} part rows {read:?}"
            );
            abort(app, bucket, "timed.bin", &id)
                .await
                .assert_status(204);
        }
    }
}

/// A bucket deleted through one node takes its unfinished multipart uploads with it: made again,
/// it lists none through either node.
#[tokio::test]
async fn a_deleted_buckets_shared_uploads_go_with_it() {
    use crate::multipart::{create_with, list_uploads};
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    a.req(Method::PUT, "/brief").send().await.assert_status(200);
    let put_b = || b.req(Method::PUT, "/brief/seen").body(b"b".to_vec());
    until_answer(put_b, 200, None, BOUND).await;
    b.delete("/brief/seen").await.assert_status(204);
    create_with(&b, "brief", "open.bin", &[]).await;
    a.req(Method::DELETE, "/brief")
        .send()
        .await
        .assert_status(204);
    a.req(Method::PUT, "/brief").send().await.assert_status(200);
    assert!(list_uploads(&a, "brief", "").await.is_empty());
    let put_b = || b.req(Method::PUT, "/brief/again").body(b"b".to_vec());
    until_answer(put_b, 200, None, BOUND).await;
    assert!(list_uploads(&b, "brief", "").await.is_empty());
}

/// The expiry sweep run by two nodes at once over one shared upload aborts it once (each row is
/// answered to one deleting statement), and a link revoked through A aborts the link's upload
/// begun through B.
#[tokio::test]
async fn shared_uploads_expire_once_and_go_with_their_revoked_link() {
    use crate::multipart::create_with;
    let Some(cluster) = cluster().await else {
        return;
    };
    let a = cluster.node("node-a", "ups").await;
    let b = cluster.node("node-b", "ups").await;
    create_with(&a, "ups", "old.bin", &[]).await;
    let far_future = i64::MAX / 2;
    let (na, nb) = tokio::join!(
        postgate::objects::multipart::expire(
            &a.state.db,
            &a.state.uploads,
            &a.state.store,
            far_future
        ),
        postgate::objects::multipart::expire(
            &b.state.db,
            &b.state.uploads,
            &b.state.store,
            far_future
        ),
    );
    assert_eq!(na.unwrap() + nb.unwrap(), 1);
    assert!(
        crate::multipart::list_uploads(&b, "ups", "")
            .await
            .is_empty()
    );
    assert!(backend_uploads(&cluster).await.is_empty());

    let (id, token) = make_link(&a, serde_json::json!({"bucket": "ups", "prefix": "r/"})).await;
    let (res, _) = call(
        &b,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "r.bin"})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(backend_uploads(&cluster).await.len(), 1);
    let (res, _) = api(
        &a,
        Method::DELETE,
        &format!("/-/api/links/{id}"),
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(204);
    assert!(
        crate::multipart::list_uploads(&b, "ups", "")
            .await
            .is_empty()
    );
    assert!(backend_uploads(&cluster).await.is_empty());
}
