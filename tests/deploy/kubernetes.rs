//! deploy/kubernetes/: the manifests against the daemon's routes and config parser.

use super::*;

/// Every document of every manifest in deploy/kubernetes, as JSON values, with its file name.
fn manifests() -> Vec<(String, Value)> {
    use serde::Deserialize as _;
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests: {files:?}");
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            let json = serde_json::to_value(value).unwrap();
            assert!(
                json["apiVersion"].is_string() && json["kind"].is_string(),
                "{name}: a document without apiVersion/kind"
            );
            out.push((name.clone(), json));
        }
    }
    out
}

fn kind<'a>(all: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|(_, v)| v["kind"] == kind)
        .map(|(_, v)| v)
        .collect()
}

/// A probe's or Service's port (a number or the name of a container port) as a number.
fn resolve_port(port: &Value, container: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_match_the_daemon() {
    let all = manifests();
    let sts = kind(&all, "StatefulSet");
    assert_eq!(sts.len(), 1, "one StatefulSet");
    let sts = sts[0];
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1, "replicas must be 1 (single writer)");
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The ConfigMap's config.toml: mounted where --config points, parsed by the daemon itself.
    let cms = kind(&all, "ConfigMap");
    assert_eq!(cms.len(), 1);
    let config_text = cms[0]["data"]["config.toml"]
        .as_str()
        .expect("the ConfigMap has config.toml");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let arg = |flag: &str| {
        let i = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[i + 1]
    };
    assert!(args.contains(&"run"), "{args:?}");
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| {
                let mp = m["mountPath"].as_str().unwrap();
                path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/')))
            })
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
    };
    let config_path = arg("--config");
    let config_mount = mount_of(config_path);
    let config_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_mount["name"])
        .expect("the config mount's volume");
    assert_eq!(
        config_volume["configMap"]["name"], cms[0]["metadata"]["name"],
        "--config comes from the ConfigMap"
    );
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        config_volume["configMap"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "config.toml" && i["path"] == file_name),
        "config.toml is projected as {file_name}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let config_file = tmp.path().join("config.toml");
    std::fs::write(&config_file, config_text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config_file)
        .env_remove("TRADEBAAS_LISTEN")
        .env_remove("TRADEBAAS_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's config.toml fails check-config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = toml::from_str(config_text).unwrap();
    let listen: std::net::SocketAddr = config["server"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        listen.ip().is_unspecified(),
        "a pod listens on 0.0.0.0, not {listen}"
    );
    let port = u64::from(listen.port());

    // The data directory: --data-dir is the PVC's mount, and the config agrees.
    let data_dir = arg("--data-dir");
    let data_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == data_dir)
        .unwrap_or_else(|| panic!("--data-dir {data_dir} is not a volume mount"));
    let claims = spec["volumeClaimTemplates"].as_array().unwrap();
    let claim = claims
        .iter()
        .find(|t| t["metadata"]["name"] == data_mount["name"])
        .expect("the data dir mount is a volumeClaimTemplate");
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    assert_eq!(config["server"]["data_dir"].as_str(), Some(data_dir));
    assert_ne!(data_mount["readOnly"], true);

    // Probes: the daemon's routes, on the port the config listens on.
    let mut probe_paths = Vec::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe} path"));
        assert!(
            tradebaas::http::ROUTES.contains(&path),
            "{probe} {path} is not a route"
        );
        assert_eq!(resolve_port(&get["port"], c), port, "{probe} port");
        probe_paths.push(path);
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    // Generous for recovery: at least the [recovery] timeout plus start-up checks, twice over.
    let startup = &c["startupProbe"];
    let startup_secs =
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    assert!(
        startup_secs >= 120,
        "startupProbe allows only {startup_secs} s"
    );
    // More than the daemon's internal shutdown limit.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let shutdown =
        humantime::parse_duration(config["server"]["shutdown_timeout"].as_str().unwrap()).unwrap();
    assert!(
        grace > shutdown.as_secs() + 5,
        "terminationGracePeriodSeconds {grace}"
    );

    // Services: the same port, one of them headless for the StatefulSet.
    let services = kind(&all, "Service");
    assert!(!services.is_empty());
    for svc in &services {
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(
                resolve_port(&p["targetPort"], c),
                port,
                "Service targetPort"
            );
        }
        assert_eq!(
            svc["spec"]["selector"], spec["selector"]["matchLabels"],
            "the Service selects the pod"
        );
    }
    assert!(
        services
            .iter()
            .any(|s| s["metadata"]["name"] == spec["serviceName"]
                && s["spec"]["clusterIP"] == "None")
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for pm in kind(&all, "PodMonitor") {
        for ep in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            assert_eq!(resolve_port(&ep["port"], c), port, "PodMonitor port");
            assert_eq!(ep["path"], "/metrics");
        }
    }

    // Credentials from a Secret, under the names the daemon reads.
    let env = c["env"].as_array().unwrap();
    for var in ["DERIBIT_CLIENT_ID", "DERIBIT_CLIENT_SECRET"] {
        let e = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("no {var} in the container's env"));
        assert!(e["value"].is_null(), "{var} must not be a literal");
        assert!(e["valueFrom"]["secretKeyRef"]["name"].is_string(), "{var}");
    }
    let broker = config["broker"].as_table().unwrap();
    assert!(broker.get("client_id_env").is_none() && broker.get("client_secret_env").is_none());
    assert_eq!(
        tradebaas_actors::broker::BrokerConfig::default().client_id_env,
        "DERIBIT_CLIENT_ID"
    );
    assert_eq!(
        tradebaas_actors::broker::BrokerConfig::default().client_secret_env,
        "DERIBIT_CLIENT_SECRET"
    );

    // Non-root, read-only root filesystem, nothing to escalate with.
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "requests.{r}");
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "limits.memory"
    );

    // The probe paths answer on a running daemon (200 or 503, never 404).
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(data.path(), &root().join("config/default.toml"), &[]);
    let base = daemon.base_url();
    for path in probe_paths {
        let (code, _) = tradebaas::status::get(&base, path, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(code == 200 || code == 503, "{path} answered {code}");
    }
    drop(daemon);
}
