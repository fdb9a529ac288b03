//! The Grafana dashboards in `dashboards/`: every InfluxQL query of every panel target,
//! annotation and template variable runs against InfluxDB 1.6.7 holding what the real demo
//! wrote, and must answer at least one series with a value. InfluxQL answers a query for a
//! field or tag nobody writes with no error and no series, so "no error" alone would prove
//! nothing: a renamed field fails here, not on a kitchen manager's screen.
//!
//! The demo (`sim::demo`, the code behind `gkgw demo`) runs in-process, with two days of
//! pre-filled history (so the KPI writer has completed hours and days to write at once), the
//! overpressure scenario (alarm events) and its simulated meters and H2S sensor. It runs on the
//! system's time with the kernel's sync state taken as synchronised: the KPI writer writes
//! nothing while the clock is unsynchronised, as it is in many containers.
//!
//! Grafana's macros and variables are substituted as Grafana does for InfluxQL: `$timeFilter`
//! is `time > now() - 7d`, `$__interval` 1m, `$__interval_ms` 60000; a query variable is run
//! first (it must answer values too) and a multi-value one stands for all its values
//! (`/^$meter$/` → `/^(EM-0002|GM-0001)$/`, regex-escaped); a query using a custom variable
//! (`$period`: day, hour) runs once per value. PromQL dashboards (`gateway.json`) are checked
//! against the demo's `/metrics` by `cli.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gkgw::clock::{Clock, Kernel, System, TimeSource};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::{free_port, repo_root, Influx1};

/// The `uid` the provisioning example gives the InfluxDB data source, and each dashboard's
/// data source variable's default.
const DATASOURCE_UID: &str = "gkgw-influx";

/// The system's clocks, with the kernel's sync state taken as synchronised.
struct SyncedSystem;

impl TimeSource for SyncedSystem {
    fn now(&self) -> (i64, i64) {
        System.now()
    }

    fn kernel(&self) -> Kernel {
        Kernel {
            synced: true,
            ..System.kernel()
        }
    }
}

/// One InfluxQL query of a dashboard: a panel's target, an annotation or a query variable.
#[derive(Debug, Clone)]
struct Query {
    file: String,
    what: String,
    query: String,
}

/// A dashboard's template variables, in order.
#[derive(Debug, Clone)]
enum Var {
    /// Run against InfluxDB; `all` when multi-value or with "All".
    Query {
        name: String,
        query: String,
        all: bool,
    },
    /// Each of its values is tried.
    Custom {
        name: String,
        values: Vec<String>,
    },
    Constant {
        name: String,
        value: String,
    },
}

impl Var {
    fn name(&self) -> &str {
        match self {
            Var::Query { name, .. } | Var::Custom { name, .. } | Var::Constant { name, .. } => name,
        }
    }
}

#[derive(Debug, Default)]
struct Dashboard {
    file: String,
    vars: Vec<Var>,
    queries: Vec<Query>,
}

/// Reads every dashboard in `dashboards/`; returns the InfluxQL ones and the number of PromQL
/// targets left to cli.rs. Panics on a dashboard the test could not check: a builder-mode
/// target (no raw query), a panel without targets, an unknown data source type, a query not
/// filtered by `$site`.
fn dashboards() -> (Vec<Dashboard>, usize) {
    let dir = repo_root().join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut promql = 0;
    let mut uids = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let d: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            (36..=41).contains(&schema),
            "{file}: schemaVersion {schema}"
        );
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(!uids.contains(&uid.to_owned()), "{file}: uid {uid} twice");
        uids.push(uid.to_owned());
        let vars = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let datasource = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no data source variable"));
        if datasource["query"] == "prometheus" {
            promql += count_targets(&file, d["panels"].as_array().expect("panels"), "prometheus");
            continue;
        }
        assert_eq!(datasource["query"], "influxdb", "{file}: data source type");
        let ds_var = datasource["name"].as_str().expect("variable name");
        assert_eq!(
            datasource["current"]["value"], DATASOURCE_UID,
            "{file}: the data source variable defaults to the provisioned uid"
        );
        let mut dash = Dashboard {
            file: file.clone(),
            ..Dashboard::default()
        };
        for v in &vars {
            let name = v["name"].as_str().expect("variable name").to_owned();
            match v["type"].as_str() {
                Some("datasource") => {}
                Some("query") => {
                    check_datasource(&file, &format!("variable {name}"), &v["datasource"], ds_var);
                    let query = v["query"]
                        .as_str()
                        .or_else(|| v["query"]["query"].as_str())
                        .unwrap_or_else(|| panic!("{file}: variable {name}: no query"));
                    dash.queries.push(Query {
                        file: file.clone(),
                        what: format!("variable ${name}"),
                        query: query.to_owned(),
                    });
                    dash.vars.push(Var::Query {
                        name,
                        query: query.to_owned(),
                        all: v["multi"] == true || v["includeAll"] == true,
                    });
                }
                Some("custom") => {
                    let values = v["query"]
                        .as_str()
                        .expect("custom values")
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    dash.vars.push(Var::Custom { name, values });
                }
                Some("constant" | "textbox") => {
                    let value = v["query"].as_str().unwrap_or_default().to_owned();
                    dash.vars.push(Var::Constant { name, value });
                }
                t => panic!("{file}: variable {name}: type {t:?} is not handled by this test"),
            }
        }
        assert!(
            dash.vars.iter().any(|v| v.name() == "site"),
            "{file}: a site variable"
        );
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if a["builtIn"] == 1 {
                continue;
            }
            let name = a["name"].as_str().unwrap_or_default();
            check_datasource(
                &file,
                &format!("annotation {name}"),
                &a["datasource"],
                ds_var,
            );
            let query = a["query"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: annotation {name}: no raw InfluxQL query"));
            dash.queries.push(Query {
                file: file.clone(),
                what: format!("annotation \"{name}\""),
                query: query.to_owned(),
            });
        }
        panel_queries(
            &file,
            d["panels"].as_array().expect("panels"),
            ds_var,
            &mut dash.queries,
        );
        for q in &dash.queries {
            assert!(
                q.what.starts_with("variable $site") || q.query.contains("$site"),
                "{}: {}: not filtered by $site (a gateway of another site would show): {}",
                q.file,
                q.what,
                q.query
            );
        }
        out.push(dash);
    }
    (out, promql)
}

fn check_datasource(file: &str, what: &str, ds: &Value, var: &str) {
    let uid = ds["uid"].as_str().unwrap_or_default();
    assert!(
        ds["type"] == "influxdb"
            && (uid == DATASOURCE_UID || uid == format!("${{{var}}}") || uid == format!("${var}")),
        "{file}: {what}: data source {ds} (expected the variable ${var} or uid {DATASOURCE_UID})"
    );
}

/// The targets of `panels` (and of the panels of collapsed rows), each a raw InfluxQL query.
fn panel_queries(file: &str, panels: &[Value], ds_var: &str, out: &mut Vec<Query>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        match p["type"].as_str() {
            Some("row") => {
                panel_queries(
                    file,
                    p["panels"].as_array().map_or(&[][..], |v| v),
                    ds_var,
                    out,
                );
                continue;
            }
            Some("text") => continue,
            _ => {}
        }
        check_datasource(file, title, &p["datasource"], ds_var);
        let targets = p["targets"].as_array().map_or(&[][..], |v| v);
        assert!(!targets.is_empty(), "{file}: \"{title}\": no targets");
        for t in targets {
            let id = t["refId"].as_str().unwrap_or_default();
            if !t["datasource"].is_null() {
                check_datasource(file, title, &t["datasource"], ds_var);
            }
            let query = t["query"].as_str().filter(|q| !q.trim().is_empty());
            assert!(
                t["rawQuery"] == true && query.is_some(),
                "{file}: \"{title}\" {id}: not a raw InfluxQL query (builder-mode targets are not checked): {t}"
            );
            out.push(Query {
                file: file.to_owned(),
                what: format!("panel \"{title}\" {id}"),
                query: query.unwrap_or_default().to_owned(),
            });
        }
    }
}

/// The PromQL targets of a Prometheus dashboard, checked for their data source only.
fn count_targets(file: &str, panels: &[Value], kind: &str) -> usize {
    let mut n = 0;
    for p in panels {
        if p["type"] == "row" {
            n += count_targets(file, p["panels"].as_array().map_or(&[][..], |v| v), kind);
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default();
        assert_eq!(p["datasource"]["type"], kind, "{file}: \"{title}\"");
        n += p["targets"].as_array().map_or(0, Vec::len);
    }
    n
}

/// Grafana's regex escaping of a variable's value (`kbn.regexEscape`).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$*+?.()|[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The query with Grafana's macros and the variables' values substituted. A variable in a
/// regex (`/^$var$/`) becomes its escaped value or, with several, `(a|b)`; elsewhere its
/// plain value (several are an error: Grafana would write `{a,b}`, which InfluxQL rejects).
fn interpolate(q: &str, values: &BTreeMap<String, Vec<String>>) -> Result<String, String> {
    let mut out = String::with_capacity(q.len() + 32);
    let mut rest = q;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, fmt, len) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {q}"))?;
            let inner = &braced[..close];
            let (n, f) = inner
                .split_once(':')
                .map_or((inner, None), |(n, f)| (n, Some(f)));
            (n, f, close + 2)
        } else {
            let n = after
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            (&after[..n], None, n)
        };
        rest = &after[len..];
        if name.is_empty() {
            out.push('$'); // a regex's end anchor
            continue;
        }
        let in_regex = out.ends_with("/^") && rest.starts_with("$/");
        let text = match name {
            "timeFilter" => "time > now() - 7d".to_owned(),
            "__interval" => "1m".to_owned(),
            "__interval_ms" => "60000".to_owned(),
            _ => {
                let v = values
                    .get(name)
                    .ok_or_else(|| format!("unknown variable ${name}"))?;
                if in_regex || fmt == Some("regex") {
                    match v.as_slice() {
                        [one] => regex_escape(one),
                        many => format!(
                            "({})",
                            many.iter()
                                .map(|s| regex_escape(s))
                                .collect::<Vec<_>>()
                                .join("|")
                        ),
                    }
                } else {
                    match v.as_slice() {
                        [one] => one.clone(),
                        _ => return Err(format!("multi-value ${name} outside a regex")),
                    }
                }
            }
        };
        out.push_str(&text);
    }
    out.push_str(rest);
    Ok(out)
}

/// The error of an InfluxQL answer, if any.
fn influx_error(v: &Value) -> Option<String> {
    if let Some(e) = v["error"].as_str() {
        return Some(e.to_owned());
    }
    v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| r["error"].as_str().map(str::to_owned))
}

/// At least one non-null value (beyond the first column: time, or a SHOW's key) in any series.
fn has_value(v: &Value) -> bool {
    let results = v["results"].as_array().into_iter().flatten();
    results
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(Value::as_array)
        .any(|row| row.iter().skip(1).any(|x| !x.is_null()))
}

/// The values a SHOW TAG VALUES answer lists (column `value`), sorted and unique.
fn tag_values(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .flat_map(|s| {
            let col = s["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|c| c == "value"))
                .unwrap_or(1);
            s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |r| r[col].as_str().map(str::to_owned))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One round over every dashboard: each query (per value of the custom variables it uses),
/// returning how many ran and what failed (an error, or no value).
fn round(influx: &Influx1, dashboards: &[Dashboard]) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failed = Vec::new();
    for d in dashboards {
        // The variables, in order: a query variable can use the ones before it.
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut custom: Vec<(&str, &[String])> = Vec::new();
        for v in &d.vars {
            match v {
                Var::Query { name, query, all } => {
                    let found = match interpolate(query, &values) {
                        Ok(q) => tag_values(&influx.query(&q)),
                        Err(_) => Vec::new(),
                    };
                    let pick = if *all {
                        found
                    } else {
                        found.into_iter().take(1).collect()
                    };
                    // An empty variable fails as its query, below; later queries still run.
                    values.insert(
                        name.clone(),
                        if pick.is_empty() {
                            vec!["?".into()]
                        } else {
                            pick
                        },
                    );
                }
                Var::Custom { name, values: v } => {
                    values.insert(name.clone(), vec![v[0].clone()]);
                    custom.push((name, v));
                }
                Var::Constant { name, value } => {
                    values.insert(name.clone(), vec![value.clone()]);
                }
            }
        }
        for q in &d.queries {
            let uses = |name: &str| {
                q.query.contains(&format!("${name}")) || q.query.contains(&format!("${{{name}"))
            };
            let mut combos: Vec<Vec<(&str, &str)>> = vec![vec![]];
            for (name, options) in custom.iter().filter(|(n, _)| uses(n)) {
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        options.iter().map(move |o| {
                            let mut c = c.clone();
                            c.push((*name, o.as_str()));
                            c
                        })
                    })
                    .collect();
            }
            for combo in combos {
                let mut vals = values.clone();
                for (n, o) in &combo {
                    vals.insert((*n).to_owned(), vec![(*o).to_owned()]);
                }
                let label = if combo.is_empty() {
                    String::new()
                } else {
                    let c: Vec<String> = combo.iter().map(|(n, o)| format!("${n}={o}")).collect();
                    format!(" [{}]", c.join(", "))
                };
                let text = match interpolate(&q.query, &vals) {
                    Ok(t) => t,
                    Err(e) => panic!("{}: {}: {e}: {}", q.file, q.what, q.query),
                };
                ran += 1;
                let answer = influx.query(&text);
                if let Some(e) = influx_error(&answer) {
                    failed.push(format!(
                        "{}: {}{label}: ERROR {e}\n    {text}",
                        q.file, q.what
                    ));
                } else if !has_value(&answer) {
                    failed.push(format!(
                        "{}: {}{label}: no series with a value\n    {text}",
                        q.file, q.what
                    ));
                }
            }
        }
    }
    (ran, failed)
}

/// The provisioning example names the data source uid the dashboards default to and points
/// a file provider at a dashboards folder.
fn check_provisioning() {
    let dir = repo_root().join("dashboards/provisioning");
    let ds = std::fs::read_to_string(dir.join("datasources/gkgw.yaml"))
        .expect("dashboards/provisioning/datasources/gkgw.yaml");
    for want in [
        "apiVersion: 1",
        "type: influxdb",
        &format!("uid: {DATASOURCE_UID}"),
        "dbName: gkgw",
    ] {
        assert!(ds.contains(want), "datasources/gkgw.yaml: {want}:\n{ds}");
    }
    let dash = std::fs::read_to_string(dir.join("dashboards/gkgw.yaml"))
        .expect("dashboards/provisioning/dashboards/gkgw.yaml");
    for want in ["apiVersion: 1", "type: file", "path: "] {
        assert!(dash.contains(want), "dashboards/gkgw.yaml: {want}:\n{dash}");
    }
}

#[test]
fn grafana_dashboards_every_influxql_query_returns_series_from_the_demo() {
    let started = Instant::now();
    check_provisioning();
    let (dashboards, promql) = dashboards();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    for want in [
        "plant.json",
        "digester.json",
        "meters.json",
        "kpi.json",
        "health.json",
    ] {
        assert!(files.contains(&want), "dashboards/{want} (found {files:?})");
    }
    assert!(
        promql > 0,
        "gateway.json's PromQL targets (checked by cli.rs)"
    );

    let influx = Influx1::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cancel = CancellationToken::new();
    let mut sink = gkgw::config::Config::default().influx;
    sink.enabled = true;
    sink.url = influx.url();
    sink.version = gkgw::config::InfluxVersion::V1;
    sink.database = "gkgw".into();
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let opts = gkgw::sim::demo::Options {
        mqtt: loopback(free_port()),
        http: loopback(free_port()),
        state_dir: None,
        meters: 6,
        meter_interval: Duration::from_secs(1),
        influx: Some(sink),
        plant: Some(loopback(0)),
        plant_faults: false,
        history_days: 2,
        commit_interval_ms: 500,
        scenario: Some(gkgw::sim::plant::Scenario::Overpressure),
        uplink: None,
        platform_key: None,
    };
    let clock = Clock::new(Arc::new(SyncedSystem));
    let demo = runtime.spawn(gkgw::sim::demo::run_with_clock(opts, clock, cancel.clone()));

    // The slowest data: the overpressure scenario's alarms (20 s after the start) and the
    // per-day panels of the energy meter's counters, polled once a minute (two readings).
    let deadline = Instant::now() + Duration::from_secs(85);
    let (ran, failed) = loop {
        if demo.is_finished() {
            let result = runtime.block_on(demo);
            panic!("the demo stopped: {result:?}");
        }
        let (ran, failed) = round(&influx, &dashboards);
        if failed.is_empty() || Instant::now() > deadline {
            break (ran, failed);
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    cancel.cancel();
    let stopped =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(15), demo).await });
    assert!(
        failed.is_empty(),
        "{} of {ran} dashboard queries without data after the demo ran {:?}:\n{}",
        failed.len(),
        started.elapsed(),
        failed.join("\n")
    );
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the demo stops cleanly: {stopped:?}"
    );
    let queries: usize = dashboards.iter().map(|d| d.queries.len()).sum();
    println!(
        "{ran} InfluxQL queries ({queries} in {} dashboards, custom variables expanded) returned series in {:?}; {promql} PromQL targets left to cli.rs",
        dashboards.len(),
        started.elapsed()
    );
}

#[test]
fn grafana_interpolation_follows_grafana() {
    let mut v = BTreeMap::new();
    v.insert("site".to_owned(), vec!["demo-site".to_owned()]);
    v.insert(
        "meter".to_owned(),
        vec!["EM-0002".to_owned(), "GM.1".to_owned()],
    );
    assert_eq!(
        interpolate(
            "SELECT mean(\"x\") FROM \"m\" WHERE $timeFilter AND \"site\" =~ /^$site$/ AND \"device\" =~ /^${meter}$/ GROUP BY time($__interval) LIMIT $__interval_ms",
            &v
        )
        .as_deref(),
        Ok("SELECT mean(\"x\") FROM \"m\" WHERE time > now() - 7d AND \"site\" =~ /^demo-site$/ AND \"device\" =~ /^(EM-0002|GM\\.1)$/ GROUP BY time(1m) LIMIT 60000")
    );
    assert_eq!(
        interpolate("\"period\" = '$site'", &v).as_deref(),
        Ok("\"period\" = 'demo-site'")
    );
    assert!(interpolate("'$meter'", &v).is_err());
    assert!(interpolate("$nobody", &v).is_err());
}
