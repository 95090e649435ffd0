//! A Compose file using every supported key, converted both ways (fresh and adopting a stack),
//! snapshot-tested; the output must load as valid manifests.

use std::path::{Path, PathBuf};

use super::compose;
use super::convert::{convert, Imported, Options};

const FULL: &str = r#"
version: "3.8"
x-common: &common
  TZ: UTC
services:
  web:
    image: taxcollector:v2.1.0
    entrypoint: /entrypoint.sh
    command: gunicorn "tax.wsgi:application" --bind 0.0.0.0:8000
    environment:
      <<: *common
      DJANGO_SETTINGS: tax.settings
      DB_PASSWORD: hunter2
      API_TOKEN:
      PORT: 8000
    env_file: web.env
    ports:
      - "8000:8000"
      - "9000-9001:9000-9001/udp"
      - target: 8443
        published: 443
        mode: host
    deploy:
      mode: replicated
      replicas: 3
      labels:
        team: tax
      resources:
        limits: {cpus: "0.5", memory: 512M}
        reservations: {cpus: "0.25", memory: 128M}
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 1m30s
        max_failure_ratio: 0.1
        order: start-first
      rollback_config:
        parallelism: 0
        order: stop-first
      restart_policy:
        condition: on-failure
        delay: 5s
        max_attempts: 3
        window: 2m
      placement:
        constraints: [node.role == manager, "node.labels.zone==a"]
        preferences:
          - spread: node.labels.zone
        max_replicas_per_node: 2
    labels:
      com.example.role: web
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
      interval: 30s
      timeout: 5s
      retries: 3
      start_period: 1m
    stop_grace_period: 1m30s
    stop_signal: SIGQUIT
    user: "1000:1000"
    working_dir: /app
    hostname: web
    init: true
    logging:
      driver: json-file
      options: {max-size: 10m, max-file: 3}
    ulimits:
      nproc: 65535
      nofile: {soft: 20000, hard: 40000}
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    networks:
      front:
        aliases: [www]
      back:
    volumes:
      - media:/app/media
      - ./static:/app/static:ro
      - type: tmpfs
        target: /tmp
        tmpfs: {size: 64m}
      - type: volume
        source: cache
        target: /cache
        volume: {nocopy: true}
    secrets:
      - db_password
      - source: api_key
        target: /run/secrets/api
        uid: "1000"
        gid: "1000"
        mode: 0o440
      - shared_cert
    configs:
      - nginx_conf
    depends_on: [worker]
    build: .
    extra_hosts: ["db:10.0.0.5"]
    devices: ["/dev/fuse"]
    sysctls: {net.core.somaxconn: 1024}
  worker:
    image: taxcollector:v2.1.0
    command: ["celery", "-A", "tax", "worker"]
    deploy:
      mode: global
      endpoint_mode: dnsrr
    healthcheck:
      disable: true
    restart: unless-stopped
    tmpfs: /run
networks:
  front:
    driver: overlay
    attachable: true
    labels: [tier=front]
  back:
    internal: true
    driver_opts: {encrypted: "true"}
    ipam:
      config: [{subnet: 10.1.0.0/24}]
  unused: {}
volumes:
  media:
    labels: {backup: daily}
  cache:
    driver: local
    driver_opts: {type: tmpfs, device: tmpfs}
  old:
    external: true
secrets:
  db_password:
    file: ./secrets/db_password.txt
  api_key:
    file: secrets/api_key
  shared_cert:
    external: true
    name: wildcard-cert
configs:
  nginx_conf:
    file: ./nginx.conf
"#;

fn run(stack: Option<&str>) -> Imported {
    let dir = PathBuf::from("/srv/tax");
    let (parsed, unset) = compose::parse(Path::new("compose.yml"), FULL, &|_| None).expect("parses");
    assert!(unset.is_empty());
    let opts = Options {
        stack: stack.map(String::from),
        project: "tax".into(),
        compose_dir: dir,
        compose_file: "compose.yml".into(),
    };
    let read = |p: &Path| match p.to_str() {
        Some("/srv/tax/web.env") => Ok("# defaults\nLOG_LEVEL=info\nDB_HOST=db\n".to_string()),
        Some("/srv/tax/nginx.conf") => Ok("server { listen 80; }\n".to_string()),
        _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
    };
    let vars = |n: &str| (n == "HOME").then(|| "/root".to_string());
    convert(&parsed, &opts, &read, &vars)
}

fn render(i: &Imported, stack: Option<&str>) -> String {
    let opts = Options {
        stack: stack.map(String::from),
        project: "tax".into(),
        compose_dir: "/srv/tax".into(),
        compose_file: "compose.yml".into(),
    };
    let mut s = super::summary(Path::new("out"), &opts, i);
    for f in &i.files {
        s.push_str(&format!("\n==> {} <==\n{}", f.name, f.text));
    }
    s
}

/// The emitted files load as manifests (every kind, across files).
fn loads(i: &Imported) {
    let inputs: Vec<(PathBuf, String)> = i
        .files
        .iter()
        .map(|f| (PathBuf::from(&f.name), f.text.clone()))
        .collect();
    if let Err(e) = steward_manifest::parse_sources(&inputs) {
        panic!("imported manifests are invalid:\n{e}\n\n{}", render(i, None));
    }
}

#[test]
fn fresh_deployment() {
    let i = run(None);
    loads(&i);
    insta::assert_snapshot!("fresh", render(&i, None));
}

#[test]
fn adopting_a_stack() {
    let i = run(Some("tc"));
    loads(&i);
    insta::assert_snapshot!("stack", render(&i, Some("tc")));
}

#[test]
fn unsupported_keys_are_listed_never_dropped() {
    let i = run(None);
    let all = i.report.unsupported.join("\n");
    for key in [
        "build",
        "extra_hosts",
        "devices",
        "sysctls",
        "deploy.endpoint_mode",
        "ipam",
    ] {
        assert!(all.contains(key), "{key} not listed in:\n{all}");
    }
    // Secrets to provide: the env variables that look secret and the files.
    let provide = i.report.to_provide.join("\n");
    for want in [
        "env DB_PASSWORD",
        "env API_TOKEN",
        "file secrets/db_password.txt",
        "file secrets/api_key",
        "wildcard-cert",
    ] {
        assert!(provide.contains(want), "{want} missing from:\n{provide}");
    }
}

#[test]
fn invalid_file_names_file_and_line() {
    let text = "services:\n  web:\n    image: a\n    ports:\n      - target: notaport\n";
    let err = compose::parse(Path::new("bad.yml"), text, &|_| None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("bad.yml:"), "{msg}");
    let err = compose::parse(Path::new("empty.yml"), "version: '3'\n", &|_| None).unwrap_err();
    assert!(err.to_string().contains("no services"), "{err}");
}
