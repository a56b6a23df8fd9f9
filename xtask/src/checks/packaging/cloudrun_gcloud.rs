//! infra/cloudrun/ used the way its README says, with the real gcloud: the
//! README's commands run verbatim through a shell, gcloud parses each YAML
//! against Cloud Run's own schema (a misspelled field is refused), and what
//! gcloud sends is held to the same rules as the files, with nothing of
//! the files dropped on the way.
//!
//! No Cloud Run emulator exists, so gcloud talks to [`FakeCloudRun`], a
//! recording fake of the Admin API's Knative-style `namespaces/*/services`
//! and `namespaces/*/workerpools` calls (get, create, replace), written
//! here. gcloud puts the region in front of the API's host name
//! (`europe-west1-run…`), so the fake is reached as gcloud's HTTP proxy
//! rather than through an endpoint address.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use super::ecs_moto::substitute;
use super::infra::readme_block;
use super::manifests::{check_cloud_run, yaml_documents};
use super::workspace::Interface;
use crate::checks::terraform::cli::run_captured;
use crate::tools;

/// What a run found: checks made, or why gcloud could not be used.
pub enum Ran {
    Checked(usize),
    Skipped(String),
}

/// Runs the README's block and the controller-as-a-service alternative.
pub fn run(repo: &Path, scratch: &Path, interfaces: &[Interface]) -> Result<Ran> {
    // gcloud is not in Debian's archive; the machines here carry it.
    let Some(gcloud) = tools::find_program(&["gcloud"]) else {
        return Ok(Ran::Skipped("no gcloud on PATH".into()));
    };
    tools::apt(&[("envsubst", "gettext-base")])?;
    let fake = FakeCloudRun::start()?;
    let config = scratch.join("gcloud-config");
    std::fs::create_dir_all(&config)?;
    let gcloud_env = |cmd: &mut Command| {
        cmd.env("CLOUDSDK_CONFIG", &config)
            .env("CLOUDSDK_AUTH_DISABLE_CREDENTIALS", "true")
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
            .env("CLOUDSDK_PROXY_TYPE", "http")
            .env("CLOUDSDK_PROXY_ADDRESS", "127.0.0.1")
            .env("CLOUDSDK_PROXY_PORT", fake.addr.port().to_string())
            .env(
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN",
                "http://run.fake.test/",
            )
            // The project comes from the commands, never from a config.
            .env_remove("CLOUDSDK_CORE_PROJECT");
    };
    let files = scratch.join("cloudrun");
    std::fs::create_dir_all(&files)?;

    // The README's block, verbatim but for where it writes its files.
    let readme = std::fs::read_to_string(repo.join("infra/cloudrun/README.md"))?;
    let block = readme_block(&readme, "gcloud run services replace")
        .context("infra/cloudrun/README.md has no block running gcloud run services replace")?;
    let block = block.replace("/tmp/", &format!("{}/", files.display()));
    // Then the variables the block left, as the shell holds them.
    let script = format!("{block}\nenv -0\n");
    let mut shell = Command::new("bash");
    shell.args(["-euo", "pipefail", "-c", &script]);
    gcloud_env(&mut shell);
    let env = run_captured(&mut shell).context("infra/cloudrun/README.md's commands")?;
    let vars: BTreeMap<&str, String> = env
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
    let var = |name: &str| {
        vars.get(name)
            .cloned()
            .with_context(|| format!("infra/cloudrun/README.md's block sets no {name}"))
    };
    let (name, project, region) = (var("NAME")?, var("PROJECT_ID")?, var("REGION")?);

    let mut checks = 0;
    let server = fake
        .created(&region, &project, "services", &format!("{name}-server"))
        .context("the README's commands created no server service")?;
    let worker_pool = fake
        .created(
            &region,
            &project,
            "workerpools",
            &format!("{name}-controller"),
        )
        .context("the README's commands created no controller worker pool")?;
    let server_url = server
        .pointer("/status/url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let sent_url = worker_pool
        .pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)
        .and_then(|env| {
            env.iter()
                .find(|e| e["name"] == "ROBOT_CONTROLLER_ALLOWED_ENDPOINTS")
        })
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned);
    let shell_url = vars.get("SERVER_URL").cloned();
    ensure!(
        sent_url.is_some() && sent_url == server_url && sent_url == shell_url,
        "the worker pool allows {sent_url:?}, not the server's URL {server_url:?} (the shell's SERVER_URL: {shell_url:?})"
    );
    // The files the block wrote, placeholders filled.
    for (file, sent) in [("server.yaml", &server), ("controller.yaml", &worker_pool)] {
        held_to_the_files(&files.join(file), sent, interfaces)?;
        checks += 1;
    }

    // The alternative to the worker pool, with the command its table names.
    let filled = files.join("controller-service.yaml");
    let template = std::fs::read_to_string(repo.join("infra/cloudrun/controller-service.yaml"))?;
    std::fs::write(&filled, substitute(&template, &vars)?)?;
    let mut replace = Command::new(&gcloud);
    replace
        .args(["run", "services", "replace"])
        .arg(&filled)
        .args(["--region", &region, "--project", &project]);
    gcloud_env(&mut replace);
    run_captured(&mut replace).context("gcloud run services replace controller-service.yaml")?;
    let service = fake
        .created(&region, &project, "services", &format!("{name}-controller"))
        .context("gcloud created no controller service")?;
    held_to_the_files(&filled, &service, interfaces)?;
    checks += 1;
    Ok(Ran::Checked(checks))
}

/// What gcloud sent for `file` keeps every value the file sets and passes
/// the same rules as the file.
fn held_to_the_files(file: &Path, sent: &Value, interfaces: &[Interface]) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let doc = yaml_documents(&text)?
        .into_iter()
        .next()
        .with_context(|| format!("{} is empty", file.display()))?;
    let mut dropped = Vec::new();
    missing_leaves(&doc, sent, String::new(), &mut dropped);
    ensure!(
        dropped.is_empty(),
        "{}: gcloud did not send {}",
        file.display(),
        dropped.join(", ")
    );
    let problems = check_cloud_run(sent, interfaces);
    ensure!(
        problems.is_empty(),
        "{} as gcloud sent it: {}",
        file.display(),
        problems.join("; ")
    );
    Ok(())
}

/// The leaves of `want` that `got` lacks or holds with another value.
/// Lists are compared item by item.
fn missing_leaves(want: &Value, got: &Value, at: String, out: &mut Vec<String>) {
    match want {
        Value::Object(map) => {
            for (k, v) in map {
                missing_leaves(v, &got[k.as_str()], format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                missing_leaves(v, &got[i], format!("{at}/{i}"), out);
            }
        }
        // gcloud sends numbers and booleans as the schema types them.
        leaf if leaf == got
            || leaf.to_string().trim_matches('"') == got.to_string().trim_matches('"') => {}
        leaf => out.push(format!("{at} = {leaf} (sent: {got})")),
    }
}

/// A hand-written fake of the Cloud Run Admin API, as little as gcloud's
/// `replace` and `describe` need: `GET` of a service or worker pool
/// (404 until created), `POST` to create, `PUT` to replace. Whatever it is
/// sent it keeps and answers back, with a status that says Ready, as the
/// real API does once a revision serves. Each connection gets one answer
/// and is closed.
struct FakeCloudRun {
    addr: SocketAddr,
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    stop: Arc<AtomicBool>,
}

impl FakeCloudRun {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let objects = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (objects2, stop2) = (objects.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let objects = objects2.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &objects);
                    });
                }
            }
        });
        Ok(Self {
            addr,
            objects,
            stop,
        })
    }

    /// What gcloud created or replaced: `<region>-run…/apis/…/namespaces/
    /// <project>/<collection>/<name>`.
    fn created(&self, region: &str, project: &str, collection: &str, name: &str) -> Option<Value> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects
            .iter()
            .find(|(key, _)| {
                key.starts_with(&format!("{region}-"))
                    && key.ends_with(&format!("/namespaces/{project}/{collection}/{name}"))
            })
            .map(|(_, v)| v.clone())
    }
}

impl Drop for FakeCloudRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One request, one answer. The request line carries an absolute URI
/// (`GET http://host/path?query`), as clients send to a proxy.
fn serve(stream: TcpStream, objects: &Mutex<BTreeMap<String, Value>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let uri = parts.next().unwrap_or_default();
    let without_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let key = without_scheme
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut objects = objects.lock().unwrap_or_else(|p| p.into_inner());
    let answer = match method.as_str() {
        "GET" => objects.get(&key).cloned(),
        "POST" | "PUT" => serde_json::from_slice::<Value>(&body).ok().map(|mut obj| {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = if method == "POST" {
                format!("{key}/{name}")
            } else {
                key.clone()
            };
            obj["metadata"]["generation"] = json!(1);
            let conditions: Vec<Value> = ["Ready", "ConfigurationsReady", "RoutesReady"]
                .iter()
                .map(|t| json!({"type": t, "status": "True"}))
                .collect();
            obj["status"] = json!({
                "observedGeneration": 1,
                "url": format!("https://{name}-fake.a.run.app"),
                "latestCreatedRevisionName": format!("{name}-00001"),
                "latestReadyRevisionName": format!("{name}-00001"),
                "conditions": conditions,
            });
            objects.insert(key, obj.clone());
            obj
        }),
        _ => None,
    };
    drop(objects);
    let (status, body) = match answer {
        Some(obj) => ("200 OK", obj),
        None => (
            "404 Not Found",
            json!({"error": {"code": 404, "message": format!("{key} not found"), "status": "NOT_FOUND"}}),
        ),
    };
    let body = body.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_and_changed_values_are_named() {
        let want = json!({"a": {"b": "1", "c": [{"d": 2}]}, "e": true});
        let same = json!({"a": {"b": "1", "c": [{"d": 2}], "x": 0}, "e": true});
        let mut out = Vec::new();
        missing_leaves(&want, &same, String::new(), &mut out);
        assert_eq!(out, Vec::<String>::new());
        let typed = json!({"a": {"b": 1, "c": [{"d": "2"}]}, "e": "true"});
        missing_leaves(&want, &typed, String::new(), &mut out);
        assert_eq!(
            out,
            Vec::<String>::new(),
            "the schema's types are not a loss"
        );
        let lossy = json!({"a": {"b": "9", "c": []}});
        missing_leaves(&want, &lossy, String::new(), &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].starts_with("/a/b = \"1\""), "{out:?}");
    }

    #[test]
    fn the_fake_answers_what_it_was_sent() {
        let fake = FakeCloudRun::start().unwrap();
        let ask = |request: String| {
            let mut s = TcpStream::connect(fake.addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        };
        let path = "http://r1-run.test/apis/x/v1/namespaces/p/services";
        let got = ask(format!("GET {path}/s HTTP/1.1\r\n\r\n"));
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        let body = r#"{"metadata":{"name":"s"},"spec":{"k":"v"}}"#;
        let got = ask(format!(
            "POST {path}?alt=json HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        let got = ask(format!("GET {path}/s?alt=json HTTP/1.1\r\n\r\n"));
        assert!(got.contains(r#""k":"v""#) && got.contains("Ready"), "{got}");
        let created = fake.created("r1", "p", "services", "s").unwrap();
        assert_eq!(created["status"]["url"], "https://s-fake.a.run.app");
        assert!(fake.created("r2", "p", "services", "s").is_none());
    }
}
