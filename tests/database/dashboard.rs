//! The dashboard's Databases section in headless Chromium: each Database's conditions, the runs
//! of its tasks on a timeline, and the due tasks it holds with why, as the API reports them.

use std::time::Duration;

use steward_e2e::browser::{require_chromium, Chromium, Controller};

use super::*;

/// Long enough for the next minute's instant of a `* * * * *` backup to fall due and be taken
/// (or held), with the reconcile that follows.
const MINUTE_BOUNDARY: Duration = Duration::from_secs(150);

#[test]
fn the_dashboard_shows_each_database_with_its_conditions_runs_and_held_tasks() {
    const TEST: &str = "the_dashboard_shows_each_database_with_its_conditions_runs_and_held_tasks";
    let Some(chromium) = require_chromium(TEST) else {
        return;
    };
    let _replica = shared();
    let Some(db) = TestDb::create(TEST) else {
        return;
    };
    let w = World::new("dbdash");
    let every_minute = |doc: String| doc.replace("\"0 2 * * *\"", "\"* * * * *\"");
    // A healthy database, backed up every minute: a run on its timeline soon.
    let dir = w.dir.path().join("backups");
    w.write(
        "db.yaml",
        &format!("{}{}", w.stack_doc(false), every_minute(db.doc("dash", &dir, ""))),
    );
    // A primary that never answers, with a backup due every minute: held, and the page says why.
    let dir2 = w.dir.path().join("backups2");
    w.write(
        "down.yaml",
        &every_minute(database_doc(
            "dashdown",
            &format!("postgres://postgres@127.0.0.1:{}/x", free_port()),
            &db.url(REPLICA_PORT),
            dir2.to_str().unwrap(),
            "",
        )),
    );
    let port = free_port();
    let mut ctl = Controller::start(&w, port, &format!("e2e-token-{}", std::process::id()));

    // What the page reads: the API's items first.
    let mut last = None;
    let ok = try_wait_for(MINUTE_BOUNDARY, || {
        ctl.assert_running();
        let item = api_item(port, "dash");
        last = item.clone();
        let item = item?;
        (condition(&item, "Ready")?.0 == "True" && condition(&item, "ReplicationHealthy")?.0 == "True").then_some(())
    });
    assert!(
        ok.is_some(),
        "dash never Ready and ReplicationHealthy in the API: last {last:?}"
    );
    let mut last = None;
    let held = try_wait_for(MINUTE_BOUNDARY, || {
        ctl.assert_running();
        let item = api_item(port, "dashdown");
        last = item.clone();
        item?["details"]["held"]
            .as_array()?
            .iter()
            .find(|h| h["task"] == "backup")
            .cloned()
    });
    let held = held.unwrap_or_else(|| panic!("dashdown's backup never held in the API: last {last:?}"));
    assert_eq!(held["hold"], "PrimaryUnknown", "{held}");
    assert_eq!(held["message"], "the primary could not be read", "{held}");
    let down = api_item(port, "dashdown").unwrap();
    assert_eq!(
        condition(&down, "Ready"),
        Some(("Unknown".into(), "PrimaryUnreachable".into())),
        "{down}"
    );

    let mut page = Chromium::launch(&chromium, &format!("http://127.0.0.1:{port}/"));
    let mut seen = (None, None);
    let shown = try_wait_for(MINUTE_BOUNDARY, || {
        ctl.assert_running();
        seen = (row(&mut page, "dash"), row(&mut page, "dashdown"));
        let (ok, down) = (seen.0.as_ref()?, seen.1.as_ref()?);
        let healthy = ok["ready"] == "True"
            && ok["replication"] == "True"
            && ok["runs"].as_array()?.iter().any(|o| o == "Succeeded");
        let held = held_line(down, "backup").is_some_and(|t| t.contains("primary could not be read"));
        (healthy && down["ready"] == "Unknown" && held).then_some(())
    });
    assert!(
        shown.is_some(),
        "the page never showed dash Ready, replicating, with a succeeded backup, and dashdown Unknown \
         with its backup held: last dash {:?}, dashdown {:?}",
        seen.0,
        seen.1
    );
    let (ok, down) = (seen.0.unwrap(), seen.1.unwrap());
    assert_eq!(down["readyReason"], "PrimaryUnreachable", "{down}");
    assert_eq!(
        held_line(&down, "backup").as_deref(),
        Some("backup held: the primary could not be read"),
        "{down}"
    );
    assert!(
        held_line(&ok, "backup").is_none_or(|t| !t.contains("primary could not be read")),
        "the hold shown on the other database's row: {ok}"
    );
    // The succeeded run on the timeline is a backup taken for real.
    let backups = backups_json(&w, "dash");
    assert!(!backups.is_empty(), "a Succeeded run shown, but no backup recorded");
}

/// The item `Database/name` of the API's status, `None` while it does not answer or lists none.
fn api_item(port: u16, name: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(port, "/api/v1/status")?;
    let status: serde_json::Value = (code == 200).then(|| serde_json::from_str(&body).ok())??;
    status["items"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == "Database" && i["name"] == name)
        .cloned()
}

/// The status and reason of the condition `type_` of an API item.
fn condition(item: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    let c = item["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.to_string(), c["reason"].as_str()?.to_string()))
}

/// What the page's Databases row of `name` shows: its Ready and ReplicationHealthy pills, the
/// outcomes on its timeline, its held lines as `[task, text]`; `None` while there is no row.
fn row(page: &mut Chromium, name: &str) -> Option<serde_json::Value> {
    let selector = serde_json::to_string(&format!(r#"#databases tr[data-database="{name}"]"#)).unwrap();
    let v = page.eval(&format!(
        r#"(() => {{
  const tr = document.querySelector({selector});
  if (!tr) return null;
  const cond = (type, part) => tr.querySelector(`td[data-label="${{type}}"] .${{part}}`)?.innerText ?? null;
  return {{
    ready: cond("Ready", "pill"),
    readyReason: cond("Ready", "reason"),
    replication: cond("ReplicationHealthy", "pill"),
    runs: [...tr.querySelectorAll(".timeline .run")].map((r) => r.dataset.outcome),
    held: [...tr.querySelectorAll("[data-held]")].map((h) => [h.dataset.held, h.innerText]),
  }};
}})()"#
    ));
    (!v.is_null()).then_some(v)
}

/// The text of the row's held line for `task`.
fn held_line(row: &serde_json::Value, task: &str) -> Option<String> {
    row["held"]
        .as_array()?
        .iter()
        .find(|h| h[0] == task)
        .and_then(|h| h[1].as_str().map(String::from))
}
