//! The logbook page: the form for each entry kind, the last 14 days, and for each entry still
//! inside its edit window a correction form and a withdrawal form. Every form works without
//! JavaScript (urlencoded POST, 303 on success, the page again with 422 and each message next
//! to its field on a refusal); the checks are the API's ([`crate::logbook`]), the messages the
//! page's language.
//!
//! *Invariant: every refusal the logbook can give has a Fluent message id
//! (`FieldError::because`, test `every_logbook_refusal_is_translated`).*

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup};

use super::i18n::{Arg, Tr};
use super::{ctx, form_pairs, lang_of, layout, local_time, page};
use crate::logbook::{Change, Draft, Entry, FieldError, Fields, Invalid, Kind, Now, Values};
use crate::store::logbook::Error as StoreError;
use crate::web::auth::Caller;
use crate::web::AppState;

/// What a form shows again after a refusal: which form (`None` = the new-entry form, or an
/// entry's correction or withdrawal), the values typed and the messages by field.
#[derive(Default)]
struct FormState {
    target: Option<(i64, &'static str)>,
    values: HashMap<String, String>,
    errors: HashMap<String, String>,
}

impl FormState {
    fn typed(values: HashMap<String, String>) -> FormState {
        FormState {
            values,
            ..FormState::default()
        }
    }

    /// Files each error under its field, in the page's language.
    fn refused(&mut self, t: &Tr, list: &[FieldError]) {
        for e in list {
            self.errors
                .entry(e.field().to_owned())
                .or_insert_with(|| message(t, e));
        }
    }
}

/// A field error as the page says it: its Fluent message, or the English text when it has none.
fn message(t: &Tr, e: &FieldError) -> String {
    match e.why() {
        Some((id, args)) => {
            let args: Vec<(&str, Arg)> =
                args.iter().map(|(k, v)| (*k, Arg::S(v.clone()))).collect();
            t.a(id, &args)
        }
        None => e.message().to_owned(),
    }
}

/// Why the store refused a correction or withdrawal, in the page's language.
fn refusal(t: &Tr, r: &crate::logbook::Refused) -> String {
    match r {
        crate::logbook::Refused::WindowClosed { window_h, .. } => {
            t.a("refused-window", &[("hours", Arg::S(window_h.to_string()))])
        }
        crate::logbook::Refused::Withdrawn { .. } => t.s("refused-withdrawn"),
    }
}

pub(super) fn kind_msg(t: &Tr, k: Kind) -> String {
    t.s(&format!("kind-{}", k.as_str().replace('_', "-")))
}

fn field_msg(t: &Tr, f: &str) -> String {
    t.s(&format!("field-{f}"))
}

/// One labelled field; `prefix` keeps ids unique when a page holds several forms.
/// The message's element is `{prefix}{name}-error`.
fn field(t: &Tr, st: &FormState, prefix: &str, name: &str, input: Markup) -> Markup {
    let err = st.errors.get(name);
    html! {
        div class=(if err.is_some() { "field invalid" } else { "field" }) {
            label for=(format!("{prefix}{name}")) { (field_msg(t, name)) }
            (input)
            @if let Some(e) = err { span.error id=(format!("{prefix}{name}-error")) role="alert" { (e) } }
        }
    }
}

/// The inputs of `kind`'s values, then `at` and `note`.
fn value_inputs(t: &Tr, kind: Kind, st: &FormState, prefix: &str) -> Markup {
    let v = |k: &str| st.values.get(k).cloned().unwrap_or_default();
    html! {
        @for f in kind.fields() {
            @match *f {
                "waste" => (field(t, st, prefix, "waste", html! {
                    select id=(format!("{prefix}waste")) name="waste" {
                        option value="" { "—" }
                        @for w in crate::plant::kpi::Waste::ALL {
                            option value=(w.as_str()) selected[v("waste") == w.as_str()] { (t.s(&format!("waste-{}", w.as_str().replace('_', "-")))) }
                        }
                    }
                })),
                "text" => (field(t, st, prefix, "text", html! {
                    textarea id=(format!("{prefix}text")) name="text" rows="3" { (v("text")) }
                })),
                name => (field(t, st, prefix, name, html! {
                    input id=(format!("{prefix}{name}")) name=(name) type="text" inputmode="decimal" value=(v(name));
                })),
            }
        }
        @if kind == Kind::DigestateOut { p.hint { (t.s("hint-digestate")) } }
        (field(t, st, prefix, "at", html! { input id=(format!("{prefix}at")) name="at" type="datetime-local" value=(v("at")); }))
        p.hint { (t.s("hint-at")) }
        (field(t, st, prefix, "note", html! { input id=(format!("{prefix}note")) name="note" type="text" maxlength="500" value=(v("note")); }))
    }
}

fn new_entry_form(t: &Tr, csrf: &str, kind: Kind, st: &FormState) -> Markup {
    html! {
        form.logbook method="post" action="/logbook" novalidate {
            input type="hidden" name="kind" value=(kind.as_str());
            input type="hidden" name="csrf" value=(csrf);
            (value_inputs(t, kind, st, "f-"))
            @if let Some(e) = st.errors.get("form") { p.error role="alert" { (e) } }
            button type="submit" { (t.s("logbook-save")) }
        }
    }
}

/// An entry's values as the correction form shows them first.
fn current_values(s: &AppState, e: &Entry) -> HashMap<String, String> {
    let f = e.values.fields();
    let mut m = HashMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put("kg", f.kg.map(|x| x.to_string()));
    put("litres", f.litres.map(|x| x.to_string()));
    put("count", f.count.map(|x| x.to_string()));
    put("ph", f.ph.map(|x| x.to_string()));
    put("ratio", f.ratio.map(|x| x.to_string()));
    put("waste", f.waste.clone());
    put("text", f.text.clone());
    put("note", e.note.clone());
    let off = s.kpi.zone().fixed_offset();
    let at = chrono::DateTime::from_timestamp_nanos(e.at_ns).with_timezone(&off);
    put("at", Some(at.format("%Y-%m-%dT%H:%M").to_string()));
    m
}

/// The correction and withdrawal forms of one entry, folded; open when `st` is about it.
fn change_forms(
    s: &AppState,
    t: &Tr,
    csrf: &str,
    e: &Entry,
    until_ns: i64,
    now_ns: i64,
    st: &FormState,
) -> Markup {
    let mine = |action: &str| {
        st.target
            .is_some_and(|(id, a)| id == e.entry && a == action)
    };
    let empty = FormState::default();
    let fresh = FormState::typed(current_values(s, e));
    let correct = if mine("revise") { st } else { &fresh };
    let withdraw = if mine("withdraw") { st } else { &empty };
    let prefix = format!("r{}-", e.entry);
    html! {
        details.change open[mine("revise") || mine("withdraw")] {
            summary { (t.a("logbook-change", &[("until", Arg::S(local_time(s, now_ns, until_ns)))])) }
            form.logbook method="post" action=(format!("/logbook/{}/revise", e.entry)) novalidate {
                input type="hidden" name="csrf" value=(csrf);
                (value_inputs(t, e.values.kind(), correct, &prefix))
                @if let Some(m) = correct.errors.get("entry") { p.error role="alert" { (m) } }
                button type="submit" { (t.s("logbook-correct")) }
            }
            form.logbook method="post" action=(format!("/logbook/{}/withdraw", e.entry)) novalidate {
                input type="hidden" name="csrf" value=(csrf);
                (field(t, withdraw, &format!("w{}-", e.entry), "reason", html! {
                    input id=(format!("w{}-reason", e.entry)) name="reason" type="text" maxlength="500" value=(withdraw.values.get("reason").cloned().unwrap_or_default());
                }))
                @if let Some(m) = withdraw.errors.get("entry") { p.error role="alert" { (m) } }
                button.danger type="submit" { (t.s("logbook-withdraw")) }
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub struct LogbookQuery {
    kind: Option<String>,
    added: Option<i64>,
    changed: Option<i64>,
}

/// What the page says after a redirect: a new entry or a changed one.
enum Done {
    Nothing,
    Added(i64),
    Changed(i64),
}

#[allow(clippy::too_many_arguments)]
async fn logbook_page(
    s: &Arc<AppState>,
    caller: &Caller,
    headers: &HeaderMap,
    kind: Kind,
    st: FormState,
    done: Done,
    status: StatusCode,
) -> Response {
    let c = ctx(s, headers, "/logbook", caller);
    let t = &c.t;
    let now = c.now_ns;
    let (entries, window_ns) = s
        .logbook
        .run(move |b| {
            let list = b.list(
                now - 14 * 86_400_000_000_000,
                now + 86_400_000_000_000,
                false,
            )?;
            Ok::<_, StoreError>((list, b.window_ns()))
        })
        .await
        .unwrap_or_default();
    let blank = FormState::default();
    // A refusal about an entry the list no longer shows (withdrawn meanwhile, or none such).
    let orphan = st
        .target
        .filter(|(id, _)| !entries.iter().any(|e| e.entry == *id))
        .and(st.errors.get("entry"));
    let body = html! {
        @if let Some(m) = orphan { p.error role="alert" { (m) } }
        @match done {
            Done::Added(id) => p.ok role="status" { (t.a("logbook-added", &[("id", Arg::N(id as f64))])) },
            Done::Changed(id) => p.ok role="status" { (t.a("logbook-changed", &[("id", Arg::N(id as f64))])) },
            Done::Nothing => {},
        }
        nav.kinds {
            @for k in Kind::ALL {
                a href=(format!("/logbook?kind={}", k.as_str())) class=[(k == kind).then_some("here")] { (kind_msg(t, k)) }
            }
        }
        h2 { (kind_msg(t, kind)) }
        @if c.manager() {
            (new_entry_form(t, &c.csrf, kind, if st.target.is_none() { &st } else { &blank }))
        } @else { p.hint { (t.s("logbook-manager-only")) } }
        h2 { (t.s("logbook-recent")) }
        div.scroll {
            table.logbook-list {
                thead { tr { th { (t.s("col-time")) } th { (t.s("col-kind")) } th { (t.s("col-values")) } th { (t.s("col-by")) } } }
                tbody {
                    @for e in entries.iter().rev() {
                        tr id=(format!("entry-{}", e.entry)) {
                            td { (local_time(s, now, e.at_ns)) }
                            td { (kind_msg(t, e.values.kind())) }
                            td { (values_text(t, &e.values)) @if let Some(n) = &e.note { " — " (n) } }
                            td { (e.by) @if e.revision > 1 { " (" (t.a("revision", &[("n", Arg::N(e.revision as f64))])) ")" } }
                        }
                        @let until = e.first_recorded_ns.saturating_add(window_ns);
                        @if c.manager() && until > now {
                            tr.change { td colspan="4" { (change_forms(s, t, &c.csrf, e, until, now, &st)) } }
                        }
                    }
                }
            }
        }
    };
    page(headers, status, layout(&c, &t.s("title-logbook"), body))
}

fn values_text(t: &Tr, v: &Values) -> String {
    use crate::logbook::Amount;
    match v {
        Values::WasteFed { waste, kg } => format!(
            "{kg} kg {}",
            t.s(&format!("waste-{}", waste.as_str().replace('_', "-")))
        ),
        Values::WaterAdded { litres } => format!("{litres} L"),
        Values::DigestateOut(Amount::Kg(kg)) => format!("{kg} kg"),
        Values::DigestateOut(Amount::Litres(l)) => format!("{l} L"),
        Values::CylindersFilled { count } | Values::CylindersDispatched { count } => {
            count.to_string()
        }
        Values::LabPh { ph } => format!("pH {ph}"),
        Values::LabFosTac { ratio } => format!("FOS/TAC {ratio}"),
        Values::Note { text } => text.clone(),
    }
}

pub async fn logbook(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<LogbookQuery>,
) -> Response {
    let kind = q
        .kind
        .as_deref()
        .and_then(Kind::parse)
        .unwrap_or(Kind::WasteFed);
    let done = match (q.added, q.changed) {
        (Some(id), _) => Done::Added(id),
        (None, Some(id)) => Done::Changed(id),
        _ => Done::Nothing,
    };
    logbook_page(
        &s,
        &caller,
        &headers,
        kind,
        FormState::default(),
        done,
        StatusCode::OK,
    )
    .await
}

/// A form's fields as the logbook takes them: blank means not given, numbers may use a decimal
/// comma, a `datetime-local` time is the site's local time. A number that does not parse is
/// an error on its field.
fn form_fields(
    s: &AppState,
    t: &Tr,
    form: &HashMap<String, String>,
    st: &mut FormState,
) -> (Fields, Option<String>, Option<String>) {
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut num = |k: &str| -> Option<f64> {
        let raw = text(k)?;
        match raw.replace(',', ".").parse::<f64>() {
            Ok(v) => Some(v),
            Err(_) => {
                st.errors.insert(k.to_owned(), t.s("error-not-a-number"));
                None
            }
        }
    };
    let fields = Fields {
        kg: num("kg"),
        litres: num("litres"),
        count: num("count"),
        ph: num("ph"),
        ratio: num("ratio"),
        waste: text("waste"),
        text: text("text"),
    };
    let at = text("at").map(|a| {
        let off = s.kpi.zone().fixed_offset();
        match chrono::NaiveDateTime::parse_from_str(&a, "%Y-%m-%dT%H:%M") {
            Ok(n) => n
                .and_local_timezone(off)
                .single()
                .map_or(a.clone(), |d| d.to_rfc3339()),
            Err(_) => a,
        }
    });
    (fields, at, text("note"))
}

fn now(s: &AppState) -> Now {
    let stamp = s.clock.now();
    Now {
        ns: stamp.ts_ns,
        synced: stamp.synced,
    }
}

/// `POST /logbook` (the form, urlencoded): the same validation as `POST /api/logbook`; a
/// refusal shows the form again with the values typed and each message next to its field.
pub async fn logbook_add(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = form_pairs(&body).into_iter().collect();
    let t = Tr::new(lang_of(&headers));
    let kind = form
        .get("kind")
        .and_then(|k| Kind::parse(k))
        .unwrap_or(Kind::WasteFed);
    let mut st = FormState::typed(form.clone());
    let (fields, at, note) = form_fields(&s, &t, &form, &mut st);
    let draft = Draft {
        kind: kind.as_str().to_owned(),
        fields,
        at,
        by: Some(caller.user.clone()),
        note,
    };
    let refused = |st| {
        logbook_page(
            &s,
            &caller,
            &headers,
            kind,
            st,
            Done::Nothing,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let new = match draft.validate(now(&s), &caller.user) {
        Ok(new) if st.errors.is_empty() => new,
        Ok(_) => return refused(st).await,
        Err(Invalid(list)) => {
            st.refused(&t, &list);
            return refused(st).await;
        }
    };
    match s.logbook.run(move |l| l.add(&new)).await {
        Ok(e) => {
            s.logbook_changed.send_replace(e.id);
            Redirect::to(&format!(
                "/logbook?kind={}&added={}",
                kind.as_str(),
                e.entry
            ))
            .into_response()
        }
        Err(e) => {
            st.errors.insert("form".into(), e.to_string());
            logbook_page(
                &s,
                &caller,
                &headers,
                kind,
                st,
                Done::Nothing,
                StatusCode::INTERNAL_SERVER_ERROR,
            )
            .await
        }
    }
}

/// A correction or withdrawal from the page: the store checks the window and the values in
/// the transaction that writes the revision; a refusal shows the entry's form again.
async fn change(
    s: Arc<AppState>,
    caller: Caller,
    headers: HeaderMap,
    entry: i64,
    change: Change,
    mut st: FormState,
) -> Response {
    let t = Tr::new(lang_of(&headers));
    let by = caller.user.clone();
    let now = now(&s);
    let result = s
        .logbook
        .run(move |l| l.revise(entry, &change, &by, now))
        .await;
    let status = match result {
        Ok(e) => {
            s.logbook_changed.send_replace(e.id);
            let kind = e.values.kind().as_str();
            return Redirect::to(&format!("/logbook?kind={kind}&changed={}", e.entry))
                .into_response();
        }
        Err(StoreError::Invalid(Invalid(list))) => {
            st.refused(&t, &list);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(StoreError::Refused(r)) => {
            st.errors.insert("entry".into(), refusal(&t, &r));
            StatusCode::CONFLICT
        }
        Err(StoreError::NotFound(id)) => {
            st.errors.insert(
                "entry".into(),
                t.a("refused-missing", &[("id", Arg::N(id as f64))]),
            );
            StatusCode::NOT_FOUND
        }
        Err(e) => {
            tracing::error!(error = %e, "logbook: store failed");
            st.errors.insert("entry".into(), e.to_string());
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let kind = Kind::WasteFed;
    logbook_page(&s, &caller, &headers, kind, st, Done::Nothing, status).await
}

fn entry_of(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

/// `POST /logbook/{entry}/revise` (the correction form).
pub async fn logbook_revise(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let Some(entry) = entry_of(&raw) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form: HashMap<String, String> = form_pairs(&body).into_iter().collect();
    let t = Tr::new(lang_of(&headers));
    let mut st = FormState::typed(form.clone());
    st.target = Some((entry, "revise"));
    let (fields, at, note) = form_fields(&s, &t, &form, &mut st);
    if !st.errors.is_empty() {
        return change_refused(s, caller, headers, st).await;
    }
    change(
        s,
        caller,
        headers,
        entry,
        Change::Correct { fields, at, note },
        st,
    )
    .await
}

/// `POST /logbook/{entry}/withdraw` (the withdrawal form; a reason is required).
pub async fn logbook_withdraw(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let Some(entry) = entry_of(&raw) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form: HashMap<String, String> = form_pairs(&body).into_iter().collect();
    let t = Tr::new(lang_of(&headers));
    let mut st = FormState::typed(form.clone());
    st.target = Some((entry, "withdraw"));
    let reason = form
        .get("reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let Some(reason) = reason else {
        st.errors.insert("reason".into(), t.s("invalid-required"));
        return change_refused(s, caller, headers, st).await;
    };
    change(s, caller, headers, entry, Change::Withdraw { reason }, st).await
}

async fn change_refused(
    s: Arc<AppState>,
    caller: Caller,
    headers: HeaderMap,
    st: FormState,
) -> Response {
    logbook_page(
        &s,
        &caller,
        &headers,
        Kind::WasteFed,
        st,
        Done::Nothing,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::ui::i18n::{ids, Lang, EN_FTL, SW_FTL};

    /// Drafts and changes that together raise every refusal `crate::logbook` can give.
    fn every_refusal() -> Vec<FieldError> {
        let now = Now {
            ns: 1_796_101_200 * 1_000_000_000,
            synced: true,
        };
        let mut out = Vec::new();
        let mut draft =
            |kind: &str, f: Fields, at: Option<&str>, by: Option<&str>, note: Option<&str>| {
                let d = Draft {
                    kind: kind.into(),
                    fields: f,
                    at: at.map(Into::into),
                    by: by.map(Into::into),
                    note: note.map(Into::into),
                };
                if let Err(Invalid(list)) = d.validate(now, "local") {
                    out.extend(list);
                }
            };
        let long = "x".repeat(crate::logbook::MAX_TEXT + 1);
        draft("nonsense", Fields::default(), None, None, None);
        draft(
            "waste_fed",
            Fields::default(),
            Some("yesterday"),
            Some(""),
            Some(""),
        );
        draft(
            "waste_fed",
            Fields {
                kg: Some(f64::NAN),
                waste: Some("gravel".into()),
                ph: Some(7.0),
                ..Fields::default()
            },
            Some("2019-01-01T00:00:00Z"),
            Some("\u{7}"),
            Some(&long),
        );
        draft(
            "waste_fed",
            Fields {
                kg: Some(-1.0),
                ..Fields::default()
            },
            Some("2030-01-01T00:00:00Z"),
            None,
            None,
        );
        draft(
            "water_added",
            Fields {
                litres: Some(1e12),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft(
            "digestate_out",
            Fields {
                kg: Some(1.0),
                litres: Some(1.0),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft("digestate_out", Fields::default(), None, None, None);
        draft(
            "cylinders_filled",
            Fields {
                count: Some(1.5),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft(
            "cylinders_filled",
            Fields {
                count: Some(0.0),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft(
            "cylinders_filled",
            Fields {
                count: Some(1e9),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft(
            "lab_ph",
            Fields {
                ph: Some(15.0),
                ..Fields::default()
            },
            None,
            None,
            None,
        );
        draft("note", Fields::default(), None, None, None);
        out
    }

    #[test]
    fn every_logbook_refusal_is_translated() {
        let list = every_refusal();
        let mut seen: Vec<&str> = list.iter().filter_map(|e| e.why().map(|w| w.0)).collect();
        seen.sort();
        seen.dedup();
        // The scenarios reach every message id `crate::logbook` uses (so a new check is seen).
        let src = include_str!("../../logbook.rs");
        let mut used: Vec<&str> = src
            .match_indices("\"invalid-")
            .map(|(i, _)| {
                let rest = &src[i + 1..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        used.sort();
        used.dedup();
        assert_eq!(seen, used, "scenarios must raise every refusal");
        for e in &list {
            assert!(e.why().is_some(), "no message id for {e}");
        }
        let (en, sw) = (ids(EN_FTL), ids(SW_FTL));
        for id in used
            .iter()
            .chain(["refused-window", "refused-withdrawn", "refused-missing"].iter())
        {
            assert!(en.contains(&id.to_string()), "{id} missing from en.ftl");
            assert!(sw.contains(&id.to_string()), "{id} missing from sw.ftl");
        }
        for lang in [Lang::En, Lang::Sw] {
            let t = Tr::new(lang);
            for e in &list {
                let m = message(&t, e);
                assert!(
                    !m.contains('{') && !m.starts_with("invalid-"),
                    "{lang:?}: {m}"
                );
            }
        }
    }
}
