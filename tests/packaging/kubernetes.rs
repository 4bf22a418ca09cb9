//! `deploy/kubernetes/`: every YAML document parses; the probes name a port
//! and path the real proxy, run with the ConfigMap's own config, answers
//! with 200; the termination grace period outlasts the drain; and two
//! replicas with that config keep a client on one server with no shared state.

use crate::common::http_backend::{HttpBackend, field, http_backend};
use crate::common::{Proxy, read_to_end, repo_root};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;

const DIR: &str = "deploy/kubernetes";

/// Every document of every manifest, as (file, document).
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join(DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                documents.push((name.clone(), value));
            }
        }
    }
    documents
}

/// The one document of this kind.
fn only(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests().into_iter().map(|(_, doc)| doc).filter(|doc| doc["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {DIR}");
    found.remove(0)
}

fn container() -> Value {
    let deployment = only("Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn args() -> Vec<String> {
    container()["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().to_string()).collect()
}

/// The uid the pods run as.
pub fn pod_uid() -> i64 {
    only("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_i64().expect("runAsUser")
}

/// The config in the ConfigMap the Deployment mounts at the `--config` path.
fn configmap_config() -> toml::Table {
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let path = crate::flag_value(&args, "--config").expect("--config in the container args");
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"] == dir)
        .unwrap_or_else(|| panic!("a volume mounted at {dir}"))
        .clone();
    assert!(mount.get("subPath").is_none(), "a subPath mount never sees ConfigMap updates");
    let volumes = only("Deployment")["spec"]["template"]["spec"]["volumes"].clone();
    let volume = volumes.as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap().clone();
    let configmap = only("ConfigMap");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"], "the config volume is the ConfigMap");
    let text = configmap["data"][file].as_str().unwrap_or_else(|| panic!("the ConfigMap has {file}"));
    toml::from_str(text).unwrap()
}

/// The ConfigMap's config made runnable here: listeners and admin on
/// loopback port 0, every backend's servers replaced by `servers`. Returns
/// it with the ports it had: listener name → port, and the admin port.
fn runnable(mut config: toml::Table, servers: &[SocketAddr]) -> (String, BTreeMap<String, u16>, u16) {
    let port = |bind: &toml::Value| bind.as_str().unwrap().parse::<SocketAddr>().unwrap().port();
    let mut ports = BTreeMap::new();
    for listener in config["listeners"].as_array_mut().unwrap() {
        let listener = listener.as_table_mut().unwrap();
        ports.insert(listener["name"].as_str().unwrap().to_string(), port(&listener["bind"]));
        listener.insert("bind".into(), "127.0.0.1:0".into());
    }
    let admin = config["admin"].as_table_mut().expect("an [admin] section for the probes");
    let admin_port = port(&admin["bind"]);
    admin.insert("bind".into(), "127.0.0.1:0".into());
    let servers: Vec<toml::Value> = servers.iter().map(|s| s.to_string().into()).collect();
    for (_, backend) in config["backends"].as_table_mut().unwrap().iter_mut() {
        backend.as_table_mut().unwrap().insert("servers".into(), servers.clone().into());
    }
    (toml::to_string(&config).unwrap(), ports, admin_port)
}

/// One HTTP/1.1 request with `Connection: close`: status, headers (names lower-case), body.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: sluice.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    stream.write_all(format!("{request}\r\n").as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut stream).await).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let documents = manifests();
    let kinds: BTreeSet<&str> = documents.iter().map(|(_, doc)| doc["kind"].as_str().unwrap()).collect();
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Kustomization"] {
        assert!(kinds.contains(kind), "{DIR} has a {kind}: {kinds:?}");
    }
    let mut files = BTreeSet::new();
    for (file, doc) in &documents {
        assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
        if doc["kind"] != "Kustomization" {
            assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
            files.insert(file.clone());
        }
    }
    let listed: BTreeSet<String> = only("Kustomization")["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, files, "kustomization.yaml lists every manifest");

    // Service and PodDisruptionBudget select the Deployment's pods.
    let labels = only("Deployment")["spec"]["template"]["metadata"]["labels"].clone();
    let selects = |selector: &Value| selector.as_object().unwrap().iter().all(|(k, v)| labels[k] == *v);
    assert!(selects(&only("Deployment")["spec"]["selector"]["matchLabels"]));
    assert!(selects(&only("Service")["spec"]["selector"]));
    assert!(selects(&only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]));

    // Non-root, read-only root filesystem, no privilege escalation.
    let pod = only("Deployment")["spec"]["template"]["spec"]["securityContext"].clone();
    assert_eq!(pod["runAsNonRoot"], true);
    let security = container()["securityContext"].clone();
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
}

#[test]
fn termination_grace_outlasts_the_pre_stop_pause_and_the_drain() {
    let args = args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let grace = sluice::config::parse_duration(crate::flag_value(&args, "--grace").expect("--grace in args")).unwrap();
    let pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
    let termination = only("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > pre_stop + grace.as_secs(),
        "terminationGracePeriodSeconds {termination} must exceed preStop {pre_stop}s + --grace {grace:?}"
    );
}

#[tokio::test]
async fn the_probes_and_ports_point_at_what_the_configmap_config_serves() {
    let backend = http_backend("web").await;
    let (config, listener_ports, admin_port) = runnable(configmap_config(), &[backend.addr]);
    let proxy = Proxy::start(&config).await;
    let admin = proxy.admin_addr().expect("the config has [admin]");

    let container = container();
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["containerPort"].as_u64().unwrap()))
        .collect();
    let port_number = |port: &Value| -> u64 {
        match port {
            Value::String(name) => *ports.get(name).unwrap_or_else(|| panic!("no container port named {name}")),
            number => number.as_u64().unwrap(),
        }
    };
    let mut probed = 0;
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let Some(http) = container.get(probe).map(|p| p["httpGet"].clone()) else { continue };
        assert_eq!(port_number(&http["port"]), u64::from(admin_port), "{probe} targets the admin listener");
        let path = http["path"].as_str().unwrap();
        let (status, _, body) = get(admin, path, &[]).await;
        assert_eq!(status, 200, "{probe} GET {path}: {body}");
        probed += 1;
    }
    assert!(probed >= 2, "readiness and liveness probes");

    // Every listener has its container port, and the Service sends traffic to one.
    for (name, port) in &listener_ports {
        assert!(ports.values().any(|p| p == &u64::from(*port)), "listener {name} (port {port}) has a containerPort");
    }
    for port in only("Service")["spec"]["ports"].as_array().unwrap() {
        let target = port_number(&port["targetPort"]);
        assert!(listener_ports.values().any(|p| u64::from(*p) == target), "Service targets listener port {target}");
    }
    // And the public listener really routes to the backend.
    let (status, _, body) = get(proxy.addr("public"), "/", &[]).await;
    assert_eq!((status, field(&body, "backend")), (200, Some("web")), "{body}");
    proxy.stop().await;
}

/// Scaling out: two replicas started from the same (ConfigMap) config, no
/// state shared. A client that first reached replica A and then replica B
/// (as a TCP load balancer may send it) stays on the server A picked: the
/// sticky cookie names the server the same way in every replica. Without a
/// cookie, an affinity key picks the same server in both (SHA-256
/// rendezvous hashing over the same server list).
#[tokio::test]
async fn two_replicas_keep_a_client_on_one_server_without_shared_state() {
    let servers = [http_backend("one").await, http_backend("two").await, http_backend("three").await];
    let addrs: Vec<SocketAddr> = servers.iter().map(|s: &HttpBackend| s.addr).collect();
    let mut config = configmap_config();
    let web = config["backends"]["web"].as_table().unwrap().clone();
    let cookie_name = web["sticky-cookie"]["name"].as_str().expect("the web backend has a sticky cookie").to_string();
    // The affinity-key half of the demonstration: key requests by a header.
    let mut keyed = web;
    let mut hash_key = toml::Table::new();
    hash_key.insert("header".into(), "x-user".into());
    keyed.insert("hash-key".into(), hash_key.into());
    config["backends"].as_table_mut().unwrap().insert("web".into(), keyed.into());
    let (config, _, _) = runnable(config, &addrs);
    let (a, b) = (Proxy::start(&config).await, Proxy::start(&config).await);
    let (a, b) = (a.addr("public"), b.addr("public"));

    let cookie_of = |headers: &[(String, String)]| -> Option<String> {
        headers.iter().find(|(name, _)| name == "set-cookie").map(|(_, v)| v.split(';').next().unwrap().to_string())
    };
    let mut servers_seen = BTreeSet::new();
    // 40 keys: the chance that rendezvous hashing over three random ports
    // leaves one server without any is 3 * (2/3)^40, about 3e-7.
    for client in 0..40 {
        // First request: no cookie yet, but a key. Both replicas pick the same
        // server for it and hand out the same cookie.
        let user = format!("user-{client}");
        let (_, from_a_headers, from_a) = get(a, "/", &[("x-user", &user)]).await;
        let (_, from_b_headers, from_b) = get(b, "/", &[("x-user", &user)]).await;
        let server = field(&from_a, "backend").unwrap().to_string();
        assert_eq!(field(&from_b, "backend"), Some(server.as_str()), "{user}: same server on both replicas");
        let cookie = cookie_of(&from_a_headers).expect("the first response sets the sticky cookie");
        assert!(cookie.starts_with(&format!("{cookie_name}=")), "{cookie}");
        assert_eq!(cookie_of(&from_b_headers), Some(cookie.clone()), "both replicas name the server alike");
        // Then the cookie alone (no key) pins the client on either replica,
        // and neither replica rewrites it.
        for replica in [a, b, b, a] {
            let (status, headers, body) = get(replica, "/", &[("cookie", &cookie)]).await;
            assert_eq!((status, field(&body, "backend")), (200, Some(server.as_str())), "{user} via {replica}");
            assert_eq!(cookie_of(&headers), None, "a valid cookie is not set again");
        }
        servers_seen.insert(server);
    }
    assert_eq!(servers_seen.len(), 3, "the keys spread over every server");
}
