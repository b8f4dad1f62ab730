//! The admin API under `/api/v1`: every endpoint over real HTTP, an error case for each, and a
//! strategy swap under load that loses nothing.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::http::{self, request};
use crate::common::*;
use serde_json::json;
use sharq::packet::QoS;

/// The Authorization header for the token of `TestBroker::with_http`.
const AUTH: &str = "Bearer s3cret";

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> http::Reply {
    let body = body.map(|b| b.to_string());
    request(addr, method, path, Some(AUTH), body.as_deref()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_detail_declare_purge_and_undeclare() {
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();

    // Declare: 201, then 200 when it already is; a bad filter is 400; no token is 401.
    let created = call(
        api,
        "POST",
        "/api/v1/groups",
        Some(json!({"group": "jobs", "filter": "jobs/#"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let again = call(
        api,
        "POST",
        "/api/v1/groups",
        Some(json!({"group": "jobs", "filter": "jobs/#"})),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let bad = call(
        api,
        "POST",
        "/api/v1/groups",
        Some(json!({"group": "jobs", "filter": "a/#/b"})),
    )
    .await;
    assert!(bad.error(400).contains("a/#/b"), "{}", bad.body);
    let malformed = call(
        api,
        "POST",
        "/api/v1/groups",
        Some(json!({"group": "jobs"})),
    )
    .await;
    assert!(
        malformed.error(400).contains("filter"),
        "{}",
        malformed.body
    );
    let anonymous = request(
        api,
        "POST",
        "/api/v1/groups",
        None,
        Some(r#"{"group":"x","filter":"x"}"#),
    )
    .await;
    assert!(anonymous.error(401).contains("Bearer"));
    assert!(anonymous.header("www-authenticate").is_some());
    let wrong = request(
        api,
        "POST",
        "/api/v1/groups",
        Some("Bearer nope"),
        Some(r#"{"group":"x","filter":"x"}"#),
    )
    .await;
    assert!(wrong.error(401).contains("wrong credentials"));
    assert!(
        broker.state().router.group("x", "x").is_none(),
        "a refused call changed nothing"
    );

    // Messages wait in the declared group; list and detail show them.
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher
        .publish_seqs("jobs/1", 0..3, QoS::AtLeastOnce)
        .await;
    let list = http::get(api, "/api/v1/groups").await;
    assert_eq!(list.status, 200);
    let groups = list.json()["groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["group"], "jobs");
    assert_eq!(groups[0]["declared"], true);
    assert_eq!(groups[0]["queued"], 3);
    assert!(
        groups[0].get("members").is_none(),
        "the list leaves members to the detail"
    );
    let detail = http::get(api, "/api/v1/groups/jobs").await.json();
    assert_eq!(detail["filters"][0]["filter"], "jobs/#");
    assert_eq!(detail["filters"][0]["members"], json!([]));
    assert!(http::get(api, "/api/v1/groups/nope")
        .await
        .error(404)
        .contains("nope"));

    // Purge: the 3 waiting messages go, counted; an unknown group is 404.
    let purged = call(api, "POST", "/api/v1/groups/jobs/purge", None).await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    assert_eq!(purged.json()["purged"], 3);
    assert_eq!(
        broker
            .state()
            .router
            .group("jobs", "jobs/#")
            .unwrap()
            .queued(),
        0
    );
    assert!(call(api, "POST", "/api/v1/groups/nope/purge", None)
        .await
        .error(404)
        .contains("nope"));
    let detail = http::get(api, "/api/v1/groups/jobs").await.json();
    let dropped: Vec<(String, u64)> =
        serde_json::from_value(detail["filters"][0]["dropped_by"].clone()).unwrap();
    assert!(dropped.contains(&("purged".into(), 3)), "{dropped:?}");

    // Undeclare needs the filter; then the memberless group ends.
    assert!(call(api, "DELETE", "/api/v1/groups/jobs", None)
        .await
        .error(400)
        .contains("filter"));
    let undeclared = call(api, "DELETE", "/api/v1/groups/jobs?filter=jobs%2F%23", None).await;
    assert_eq!(undeclared.status, 200, "{}", undeclared.body);
    assert!(broker.state().router.group("jobs", "jobs/#").is_none());
    assert!(
        call(api, "DELETE", "/api/v1/groups/jobs?filter=jobs%2F%23", None)
            .await
            .error(404)
            .contains("declared")
    );

    // The events saw it all.
    let events = http::get(api, "/api/v1/events").await.json();
    let kinds: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "group_created",
        "declared",
        "purged",
        "undeclared",
        "group_ended",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} not in {kinds:?}");
    }
    assert!(http::get(api, "/api/v1/nothing")
        .await
        .error(404)
        .contains("openapi"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_list_detail_and_disconnect() {
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();
    let mut client = RawClient::v5(broker.addr(), "sensor/7").await;
    client.subscribe("a/b", QoS::AtLeastOnce).await;
    let list = http::get(api, "/api/v1/clients").await.json();
    assert_eq!(list["clients"][0]["client_id"], "sensor/7");
    assert_eq!(list["clients"][0]["online"], true);
    let detail = http::get(api, "/api/v1/clients/sensor%2F7").await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!(detail.json()["subscriptions"], json!(["a/b"]));
    assert!(http::get(api, "/api/v1/clients/ghost")
        .await
        .error(404)
        .contains("ghost"));

    assert_eq!(
        request(
            api,
            "POST",
            "/api/v1/clients/sensor%2F7/disconnect",
            None,
            None
        )
        .await
        .status,
        401
    );
    let kicked = call(api, "POST", "/api/v1/clients/sensor%2F7/disconnect", None).await;
    assert_eq!(kicked.status, 200, "{}", kicked.body);
    client.expect_disconnect(0x98).await;
    broker.wait_session_offline("sensor/7").await;
    assert!(
        call(api, "POST", "/api/v1/clients/sensor%2F7/disconnect", None)
            .await
            .error(404)
            .contains("not connected")
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_swap_under_load_loses_nothing_and_errors_change_nothing() {
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();
    let mut members = Vec::new();
    for i in 0..3 {
        let mut client = RawClient::v5(broker.addr(), &format!("w{i}")).await;
        client.subscribe("$share/load/l/#", QoS::AtLeastOnce).await;
        members.push(Member::spawn(client, AckMode::Ack));
    }
    let configured = broker
        .state()
        .router
        .group("load", "l/#")
        .unwrap()
        .strategy_label();
    // Errors first: unknown built-in (422), both kinds (400), no token (401), bad JSON (400).
    assert!(call(
        api,
        "PUT",
        "/api/v1/groups/load/strategy",
        Some(json!({"strategy": "no_such"}))
    )
    .await
    .error(422)
    .contains("no_such"));
    assert!(call(
        api,
        "PUT",
        "/api/v1/groups/load/strategy",
        Some(json!({"strategy": "round_robin", "plugin": "x.wasm"}))
    )
    .await
    .error(400)
    .contains("exactly one"));
    assert_eq!(
        request(
            api,
            "PUT",
            "/api/v1/groups/load/strategy",
            None,
            Some(r#"{"strategy":"round_robin"}"#)
        )
        .await
        .status,
        401
    );
    assert_eq!(
        request(
            api,
            "PUT",
            "/api/v1/groups/load/strategy",
            Some(AUTH),
            Some("{not json")
        )
        .await
        .status,
        400
    );
    assert!(call(
        api,
        "PUT",
        "/api/v1/groups/load/strategy",
        Some(json!({"plugin": "/nowhere/x.wasm"}))
    )
    .await
    .error(403)
    .contains("shared.plugin_dir"));
    assert_eq!(
        broker
            .state()
            .router
            .group("load", "l/#")
            .unwrap()
            .strategy_label(),
        configured
    );
    assert!(call(api, "DELETE", "/api/v1/groups/load/strategy", None)
        .await
        .error(404)
        .contains("API"));

    // Now swap back and forth while 3000 QoS 1 messages flow.
    let publishing = {
        let addr = broker.addr();
        tokio::spawn(async move {
            let mut publisher = RawClient::v5(addr, "producer").await;
            for chunk in 0..30u32 {
                publisher
                    .publish_seqs("l/x", chunk * 100..(chunk + 1) * 100, QoS::AtLeastOnce)
                    .await;
            }
            publisher
        })
    };
    let strategies = ["least_inflight", "sticky", "random", "round_robin"];
    let mut swaps = 0;
    while !publishing.is_finished() || swaps < 4 {
        let strategy = strategies[swaps % strategies.len()];
        let params = if strategy == "random" {
            json!({"seed": 7})
        } else {
            json!({})
        };
        let reply = call(
            api,
            "PUT",
            "/api/v1/groups/load/strategy",
            Some(json!({"strategy": strategy, "params": params})),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["groups_swapped"], 1);
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publishing.await.unwrap();
    let refs: Vec<&Member> = members.iter().collect();
    wait_total(&refs, 3000).await;
    assert_exactly_once(
        "after swaps",
        members.iter().flat_map(|m| m.seqs()),
        0..3000,
    );
    let group = broker.state().router.group("load", "l/#").unwrap();
    assert!(
        group
            .strategy_counters
            .reloads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );
    let events = http::get(api, "/api/v1/events").await.json();
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "strategy_swapped"));

    // Back to the config's rules.
    let cleared = call(api, "DELETE", "/api/v1/groups/load/strategy", None).await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(group.strategy_label(), configured);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_the_config_file_or_says_why_not() {
    // No file: the embedded default (or a config built in code) cannot be reloaded.
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();
    assert!(call(api, "POST", "/api/v1/reload", None)
        .await
        .error(409)
        .contains("--config"));
    broker.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sharq.toml");
    let toml = "[server]\nlisteners = [\"127.0.0.1:0\"]\nsys_interval_secs = 0\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n";
    std::fs::write(&path, toml).unwrap();
    let broker = TestBroker::from_config(sharq::Config::from_file(&path).unwrap()).await;
    let (api, _) = broker.http();
    let mut member = RawClient::v5(broker.addr(), "m").await;
    member.subscribe("$share/r/t", QoS::AtMostOnce).await;
    std::fs::write(
        &path,
        format!("{toml}[[shared.groups]]\nname = \"r\"\nstrategy = \"round_robin\"\n"),
    )
    .unwrap();
    let reloaded = call(api, "POST", "/api/v1/reload", None).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(
        broker
            .state()
            .router
            .group("r", "t")
            .unwrap()
            .strategy_label(),
        "round_robin"
    );
    std::fs::write(&path, format!("{toml}[shared]\nno_such_key = 1\n")).unwrap();
    assert!(call(api, "POST", "/api/v1/reload", None)
        .await
        .error(422)
        .contains("no_such_key"));
    assert_eq!(
        broker
            .state()
            .router
            .group("r", "t")
            .unwrap()
            .strategy_label(),
        "round_robin"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_may_call_with_basic_auth_and_the_openapi_document_lists_every_route() {
    let broker = TestBroker::with_http(|c| {
        c.auth.users.insert("admin".into(), "pw".into());
        c.http.users = vec!["admin".into()];
    })
    .await;
    let (api, _) = broker.http();
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let ok = request(
        api,
        "POST",
        "/api/v1/groups",
        Some(&basic("admin", "pw")),
        Some(r#"{"group":"b","filter":"b"}"#),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let wrong = request(
        api,
        "POST",
        "/api/v1/groups",
        Some(&basic("admin", "nope")),
        Some(r#"{"group":"c","filter":"c"}"#),
    )
    .await;
    assert_eq!(wrong.status, 401);

    let spec = http::get(api, "/api/v1/openapi.json").await.json();
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/groups", &["get", "post"][..]),
        ("/groups/{group}", &["get", "delete"]),
        ("/groups/{group}/strategy", &["put", "delete"]),
        ("/groups/{group}/purge", &["post"]),
        ("/clients", &["get"]),
        ("/clients/{client_id}", &["get"]),
        ("/clients/{client_id}/disconnect", &["post"]),
        ("/reload", &["post"]),
        ("/events", &["get"]),
        ("/live", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not described"
            );
        }
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_pushes_snapshots_and_events() {
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();
    let mut feed = http::SseStream::open(api, "/api/v1/live?watch=feed").await;
    feed.next_named("events", TIMEOUT).await;
    let mut member = RawClient::v5(broker.addr(), "listener").await;
    member.subscribe("$share/feed/f", QoS::AtMostOnce).await;
    let joined = feed.next_named("event", TIMEOUT).await;
    let joined: serde_json::Value = serde_json::from_str(&joined.data).unwrap();
    assert_eq!(joined["kind"], "group_created");
    let snapshot = feed.next_named("snapshot", Duration::from_secs(3)).await;
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot.data).unwrap();
    let group = &snapshot["groups"][0];
    assert_eq!(group["group"], "feed");
    assert_eq!(group["members"][0]["client_id"], "listener");
    broker.shutdown().await;
}

#[tokio::test]
async fn listening_off_loopback_without_a_token_is_refused_naming_the_key() {
    let err = sharq::Config::from_toml("[http]\nlisten = \"0.0.0.0:8088\"\n", "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("http.listen") && err.contains("http.token"),
        "{err}"
    );
    let err = sharq::Config::from_toml("[http]\nlisten = \"localhost\"\n", "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.listen"), "{err}");
    sharq::Config::from_toml("[http]\nlisten = \"0.0.0.0:8088\"\ntoken = \"t\"\n", "test").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_durable_group_drops_its_disk_tail_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let durable = |c: &mut sharq::Config| {
        c.http.listen = "127.0.0.1:0".into();
        c.http.token = "s3cret".into();
        c.storage.dir = dir.path().to_path_buf();
        c.storage.memory_window_messages = 4;
    };
    let broker = TestBroker::with(durable).await;
    let (api, _) = broker.http();
    let created = call(
        api,
        "POST",
        "/api/v1/groups",
        Some(json!({"group": "backlog", "filter": "b/#"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut publisher = RawClient::v5(broker.addr(), "producer").await;
    publisher.publish_seqs("b/1", 0..20, QoS::AtLeastOnce).await;
    let group = broker.state().router.group("backlog", "b/#").unwrap();
    assert_eq!(
        (group.queued(), group.queued_in_memory()),
        (20, 4),
        "16 wait on disk only"
    );
    let purged = call(
        api,
        "POST",
        "/api/v1/groups/backlog/purge?filter=b%2F%23",
        None,
    )
    .await;
    assert_eq!(purged.json()["purged"], 20, "{}", purged.body);
    // What arrives after the purge stays.
    publisher
        .publish_seqs("b/1", 100..102, QoS::AtLeastOnce)
        .await;
    assert_eq!(group.queued(), 2);
    publisher.disconnect().await;
    broker.shutdown().await;
    drop(group);
    drop(broker);

    let broker = TestBroker::with(durable).await;
    let group = broker
        .state()
        .router
        .group("backlog", "b/#")
        .expect("declared through the API, kept by the store");
    assert_eq!(group.queued(), 2);
    let mut member = RawClient::v5(broker.addr(), "late").await;
    member
        .subscribe("$share/backlog/b/#", QoS::AtLeastOnce)
        .await;
    let seqs =
        [member.recv_and_ack().await, member.recv_and_ack().await].map(|p| payload_seq(&p.payload));
    assert_eq!(seqs, [100, 101]);
    member.expect_no_publish(QUIET).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_read_needs_credentials_but_the_page_itself() {
    let broker = TestBroker::with_http(|c| c.http.listen = "0.0.0.0:0".into()).await;
    let (bound, _) = broker.http();
    let api = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    for path in [
        "/metrics",
        "/api/v1/groups",
        "/api/v1/groups/g",
        "/api/v1/clients",
        "/api/v1/clients/c",
        "/api/v1/events",
        "/api/v1/live",
    ] {
        let anonymous = http::get(api, path).await;
        assert!(anonymous.error(401).contains("Bearer"), "{path}");
        let wrong = request(api, "GET", path, Some("Bearer wrong"), None).await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    for path in [
        "/metrics",
        "/api/v1/groups",
        "/api/v1/clients",
        "/api/v1/events",
    ] {
        assert_eq!(
            request(api, "GET", path, Some(AUTH), None).await.status,
            200,
            "{path}"
        );
    }
    // The live feed takes the token in the query too (EventSource cannot set headers).
    let mut feed = http::SseStream::open(api, "/api/v1/live?token=s3cret").await;
    feed.next_named("snapshot", Duration::from_secs(3)).await;
    for path in ["/", "/app.js", "/app.css", "/api/v1/openapi.json"] {
        assert_eq!(http::get(api, path).await.status, 200, "{path} is public");
    }
    broker.shutdown().await;
}

/// Issue #25: a page on a rebound name (`Host: attacker.example` reaching 127.0.0.1) gets 421
/// Misdirected Request on every route, the page, `/metrics` and mutations included; the
/// listen address, `localhost`, loopback literals and `http.allowed_hosts` are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_host_headers_are_refused_and_known_names_served() {
    let broker = TestBroker::with_http(|c| {
        c.http.allowed_hosts = vec!["sharq.example".into(), "proxy.example:8443".into()];
    })
    .await;
    let (api, _) = broker.http();
    let _client = RawClient::v5(broker.addr(), "secret-client-id").await;
    let port = api.port();
    let get_as = |host: String, path: &'static str| async move {
        http::send(
            api,
            http::Req {
                path,
                host: Some(&host),
                ..Default::default()
            },
        )
        .await
    };
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        "sharq.example".to_owned(),
        format!("sharq.example:{port}"),
        "proxy.example:8443".to_owned(),
    ] {
        let reply = get_as(host.clone(), "/api/v1/clients").await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
        assert!(reply.body.contains("secret-client-id"), "{host}");
        assert_eq!(get_as(host.clone(), "/metrics").await.status, 200, "{host}");
    }
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        "proxy.example".to_owned(),
        "proxy.example:8080".to_owned(),
        format!("localhost.attacker.example:{port}"),
        format!("10.1.2.3:{port}"),
        "x y".to_owned(),
    ] {
        for path in ["/api/v1/clients", "/metrics", "/", "/api/v1/live"] {
            let reply = get_as(host.clone(), path).await;
            assert!(
                reply.error(421).contains("http.allowed_hosts"),
                "{host} {path}: {}",
                reply.body
            );
            assert!(!reply.body.contains("secret-client-id"));
        }
        let mutation = http::send(
            api,
            http::Req {
                method: "POST",
                path: "/api/v1/groups",
                auth: Some(AUTH),
                body: Some(r#"{"group":"rebound","filter":"r"}"#),
                host: Some(&host),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(mutation.status, 421, "{host}: {}", mutation.body);
    }
    assert!(broker.state().router.group("rebound", "r").is_none());
    // No Host at all: HTTP/1.1 requires one.
    assert_eq!(get_as(String::new(), "/api/v1/clients").await.status, 400);
    broker.shutdown().await;

    // Listening on every address: any address literal is the listen address, a name is not.
    let broker = TestBroker::with_http(|c| c.http.listen = "0.0.0.0:0".into()).await;
    let api = SocketAddr::from(([127, 0, 0, 1], broker.http().0.port()));
    for (host, status) in [("192.0.2.7:8088", 200), ("attacker.example", 421)] {
        let reply = http::send(
            api,
            http::Req {
                path: "/api/v1/groups",
                auth: Some(AUTH),
                host: Some(host),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(reply.status, status, "{host}: {}", reply.body);
    }
    broker.shutdown().await;
}

/// Issue #25: the token rides in the query string on the live feed only (EventSource cannot
/// set headers); a mutation, or any other read, carrying it there is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_in_the_query_string_opens_the_live_feed_only() {
    let broker = TestBroker::with_http(|c| c.http.listen = "0.0.0.0:0".into()).await;
    let api = SocketAddr::from(([127, 0, 0, 1], broker.http().0.port()));
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/groups?token=s3cret",
            Some(r#"{"group":"q","filter":"q"}"#),
        ),
        ("DELETE", "/api/v1/groups/q?filter=q&token=s3cret", None),
        (
            "PUT",
            "/api/v1/groups/q/strategy?token=s3cret",
            Some(r#"{"strategy":"sticky"}"#),
        ),
        ("POST", "/api/v1/reload?token=s3cret", None),
        ("GET", "/api/v1/groups?token=s3cret", None),
        ("GET", "/metrics?token=s3cret", None),
    ] {
        let reply = request(api, method, path, None, body).await;
        assert!(
            reply.error(401).contains("query string"),
            "{method} {path}: {}",
            reply.body
        );
    }
    assert!(broker.state().router.group("q", "q").is_none());
    // The same token in the header works; in the query, the live feed opens.
    let declared = request(
        api,
        "POST",
        "/api/v1/groups",
        Some(AUTH),
        Some(r#"{"group":"q","filter":"q"}"#),
    )
    .await;
    assert_eq!(declared.status, 201, "{}", declared.body);
    let mut feed = http::SseStream::open(api, "/api/v1/live?token=s3cret").await;
    feed.next_named("snapshot", Duration::from_secs(3)).await;
    broker.shutdown().await;
}

/// Issue #25: password guessing over HTTP Basic is limited per source address: after 5
/// failures, 429 (even for the right password) with Retry-After; another address, and the
/// bearer token from the same one, still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_basic_failures_from_one_address_get_429() {
    let broker = TestBroker::with_http(|c| {
        c.auth.users.insert("admin".into(), "pw".into());
        c.http.users = vec!["admin".into()];
    })
    .await;
    let (api, _) = broker.http();
    let basic = |password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"))
        )
    };
    let declare = |auth: String, from: [u8; 4], group: &'static str| async move {
        let body = format!(r#"{{"group":"{group}","filter":"{group}"}}"#);
        http::send(
            api,
            http::Req {
                method: "POST",
                path: "/api/v1/groups",
                auth: Some(&auth),
                body: Some(&body),
                from: Some(from.into()),
                ..Default::default()
            },
        )
        .await
    };
    for guess in 0..5 {
        let reply = declare(basic(&format!("guess{guess}")), [127, 0, 0, 1], "g").await;
        assert_eq!(reply.status, 401, "guess {guess}: {}", reply.body);
    }
    let limited = declare(basic("guess5"), [127, 0, 0, 1], "g").await;
    assert!(limited.error(429).contains("too many"), "{}", limited.body);
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The right password changes nothing while the address is limited.
    assert_eq!(declare(basic("pw"), [127, 0, 0, 1], "g").await.status, 429);
    assert!(broker.state().router.group("g", "g").is_none());
    // Another address is not limited; nor is the token.
    let other = declare(basic("pw"), [127, 0, 0, 2], "other").await;
    assert_eq!(other.status, 201, "{}", other.body);
    let token = declare(AUTH.to_owned(), [127, 0, 0, 1], "token").await;
    assert_eq!(token.status, 201, "{}", token.body);
    broker.shutdown().await;
}

/// Issue #25: a plugin path given through the API must lie inside `shared.plugin_dir`
/// (symbolic links followed); without `shared.plugin_dir` the API takes none. An error never
/// quotes the file it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_plugin_paths_are_confined_to_plugin_dir_and_errors_quote_no_file() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(builtin_wasm("sticky"), plugins.join("good.wasm")).unwrap();
    std::fs::copy(builtin_wasm("least_inflight"), plugins.join("other.wasm")).unwrap();
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-LINE\n").unwrap();
    std::fs::write(plugins.join("notes.wasm"), "password=hunter2\n").unwrap();
    std::os::unix::fs::symlink(&secret, plugins.join("link.wasm")).unwrap();
    std::fs::create_dir(plugins.join("dir.wasm")).unwrap();

    let put = |api: SocketAddr, plugin: String| async move {
        call(
            api,
            "PUT",
            "/api/v1/groups/p/strategy",
            Some(json!({ "plugin": plugin })),
        )
        .await
    };
    // No shared.plugin_dir: refused, whatever the path.
    let broker = TestBroker::with_http(|_| {}).await;
    let (api, _) = broker.http();
    for plugin in [
        plugins.join("good.wasm").display().to_string(),
        secret.display().to_string(),
    ] {
        let reply = put(api, plugin.clone()).await;
        assert!(reply.error(403).contains("shared.plugin_dir"), "{plugin}");
    }
    broker.shutdown().await;

    let broker = TestBroker::with_http(|c| c.shared.plugin_dir = Some(plugins.clone())).await;
    let (api, _) = broker.http();
    let mut member = RawClient::v5(broker.addr(), "m").await;
    member.subscribe("$share/p/t", QoS::AtMostOnce).await;
    let before = broker
        .state()
        .router
        .group("p", "t")
        .unwrap()
        .strategy_label();
    for plugin in [
        secret.display().to_string(),
        "../secret.txt".to_owned(),
        plugins.join("../secret.txt").display().to_string(),
        "link.wasm".to_owned(),
        "/etc/passwd".to_owned(),
    ] {
        let reply = put(api, plugin.clone()).await;
        assert!(
            reply.error(403).contains("not inside shared.plugin_dir"),
            "{plugin}: {}",
            reply.body
        );
        assert!(!reply.body.contains("TOP-SECRET") && !reply.body.contains("root:"));
    }
    for (plugin, says) in [
        ("notes.wasm", "not a WebAssembly component"),
        ("missing.wasm", "no such file"),
        ("dir.wasm", "regular file"),
    ] {
        let reply = put(api, plugin.to_owned()).await;
        let error = reply.error(422);
        assert!(error.contains(says), "{plugin}: {error}");
        assert!(
            !error.contains("hunter2") && !error.contains("password"),
            "{error}"
        );
    }
    assert_eq!(
        broker
            .state()
            .router
            .group("p", "t")
            .unwrap()
            .strategy_label(),
        before,
        "refused calls changed nothing"
    );
    // Relative to shared.plugin_dir, and absolute inside it.
    for plugin in [
        "good.wasm".to_owned(),
        plugins.join("other.wasm").display().to_string(),
    ] {
        let reply = put(api, plugin.clone()).await;
        assert_eq!(reply.status, 200, "{plugin}: {}", reply.body);
        assert_eq!(reply.json()["groups_swapped"], 1);
    }
    broker.shutdown().await;
}
