//! The plant logbook: what people fed into the digester and took out of it, lab results and
//! notes (issue 10). This module is the pure core: the kinds of entry, their values, the
//! validation that names the field, and the rules for corrections and withdrawals. No I/O, no
//! clock (the time is passed in), no SQL (`store::logbook` stores it), no HTTP (`web::logbook`).
//!
//! # Entries and revisions
//! An **entry** is one thing that happened (120 kg of household waste fed at 08:00). It has an
//! id (the store's row id of its first revision) and revisions 1, 2, …: a **correction** is a
//! new revision with new values, a **withdrawal** a new revision marked withdrawn that keeps the
//! last values. Nothing is ever deleted or changed in place, so every revision stays with who
//! made it and when (the audit trail). Both are allowed only within the edit window after the
//! entry was first recorded ([`may_revise`]; `[logbook] edit_window_hours`, default 24).
//!
//! # Validation
//! [`Draft::validate`] checks every field and returns every problem at once, each naming its
//! field (`kg: must be more than 0`), so a form can mark all of them. The plausibility bounds
//! below are unsourced working defaults: wide enough for a community plant, narrow enough to
//! catch a typed extra zero or grams entered as kg.

use std::fmt;

use crate::plant::kpi::Waste;

/// The most waste one entry may record, kg (a lorry load; more is a typing error).
pub const MAX_KG: f64 = 20_000.0;
/// The most water or digestate one entry may record, litres (or kg of digestate).
pub const MAX_LITRES: f64 = 100_000.0;
/// The most cylinders one entry may record.
pub const MAX_CYLINDERS: f64 = 1_000.0;
/// The longest note or free text, in characters.
pub const MAX_TEXT: usize = 2_000;
/// The longest user name.
pub const MAX_BY: usize = 64;
/// How far in the future `at` may be: a few minutes of clock difference between a phone and
/// the gateway, not a planned feeding.
pub const MAX_FUTURE_NS: i64 = 5 * 60 * 1_000_000_000;
/// The earliest `at` accepted: 2020-01-01T00:00:00Z (no plant logged anything before).
pub const MIN_AT_NS: i64 = 1_577_836_800 * 1_000_000_000;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    WasteFed,
    WaterAdded,
    DigestateOut,
    CylindersFilled,
    CylindersDispatched,
    LabPh,
    LabFosTac,
    Note,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::WasteFed,
        Kind::WaterAdded,
        Kind::DigestateOut,
        Kind::CylindersFilled,
        Kind::CylindersDispatched,
        Kind::LabPh,
        Kind::LabFosTac,
        Kind::Note,
    ];

    /// The name in the API, the CLI, the store and InfluxDB.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WasteFed => "waste_fed",
            Kind::WaterAdded => "water_added",
            Kind::DigestateOut => "digestate_out",
            Kind::CylindersFilled => "cylinders_filled",
            Kind::CylindersDispatched => "cylinders_dispatched",
            Kind::LabPh => "lab_ph",
            Kind::LabFosTac => "lab_fos_tac",
            Kind::Note => "note",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The value fields this kind takes (all required, except digestate: kg or litres).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::WasteFed => &["waste", "kg"],
            Kind::WaterAdded => &["litres"],
            Kind::DigestateOut => &["kg", "litres"],
            Kind::CylindersFilled | Kind::CylindersDispatched => &["count"],
            Kind::LabPh => &["ph"],
            Kind::LabFosTac => &["ratio"],
            Kind::Note => &["text"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much digestate went out: weighed or measured by volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Kg(f64),
    Litres(f64),
}

/// An entry's kind with its values, valid by construction (made by [`Draft::validate`] or
/// [`Values::stored`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    WasteFed { waste: Waste, kg: f64 },
    WaterAdded { litres: f64 },
    DigestateOut(Amount),
    CylindersFilled { count: u32 },
    CylindersDispatched { count: u32 },
    LabPh { ph: f64 },
    LabFosTac { ratio: f64 },
    Note { text: String },
}

impl Values {
    pub fn kind(&self) -> Kind {
        match self {
            Values::WasteFed { .. } => Kind::WasteFed,
            Values::WaterAdded { .. } => Kind::WaterAdded,
            Values::DigestateOut(_) => Kind::DigestateOut,
            Values::CylindersFilled { .. } => Kind::CylindersFilled,
            Values::CylindersDispatched { .. } => Kind::CylindersDispatched,
            Values::LabPh { .. } => Kind::LabPh,
            Values::LabFosTac { .. } => Kind::LabFosTac,
            Values::Note { .. } => Kind::Note,
        }
    }

    /// The values as loose fields (for storing, showing and merging a correction).
    pub fn fields(&self) -> Fields {
        let mut f = Fields::default();
        match self {
            Values::WasteFed { waste, kg } => {
                f.waste = Some(waste.as_str().to_owned());
                f.kg = Some(*kg);
            }
            Values::WaterAdded { litres } => f.litres = Some(*litres),
            Values::DigestateOut(Amount::Kg(kg)) => f.kg = Some(*kg),
            Values::DigestateOut(Amount::Litres(l)) => f.litres = Some(*l),
            Values::CylindersFilled { count } | Values::CylindersDispatched { count } => {
                f.count = Some(f64::from(*count))
            }
            Values::LabPh { ph } => f.ph = Some(*ph),
            Values::LabFosTac { ratio } => f.ratio = Some(*ratio),
            Values::Note { text } => f.text = Some(text.clone()),
        }
        f
    }

    /// Values read back from the store: only their presence is checked, not today's
    /// plausibility bounds, so a bound made stricter later never makes an old row unreadable.
    pub fn stored(kind: Kind, f: &Fields) -> Result<Values, String> {
        let need = |v: Option<f64>, name: &str| v.ok_or_else(|| format!("{kind} without {name}"));
        Ok(match kind {
            Kind::WasteFed => Values::WasteFed {
                waste: f
                    .waste
                    .as_deref()
                    .ok_or_else(|| format!("{kind} without waste"))?
                    .parse()
                    .map_err(|e: crate::plant::kpi::UnknownWaste| e.to_string())?,
                kg: need(f.kg, "kg")?,
            },
            Kind::WaterAdded => Values::WaterAdded {
                litres: need(f.litres, "litres")?,
            },
            Kind::DigestateOut => Values::DigestateOut(match (f.kg, f.litres) {
                (Some(kg), _) => Amount::Kg(kg),
                (None, Some(l)) => Amount::Litres(l),
                (None, None) => return Err(format!("{kind} without kg or litres")),
            }),
            Kind::CylindersFilled => Values::CylindersFilled {
                count: need(f.count, "count")? as u32,
            },
            Kind::CylindersDispatched => Values::CylindersDispatched {
                count: need(f.count, "count")? as u32,
            },
            Kind::LabPh => Values::LabPh {
                ph: need(f.ph, "ph")?,
            },
            Kind::LabFosTac => Values::LabFosTac {
                ratio: need(f.ratio, "ratio")?,
            },
            Kind::Note => Values::Note {
                text: f
                    .text
                    .clone()
                    .ok_or_else(|| format!("{kind} without text"))?,
            },
        })
    }
}

/// The value fields as given (a form, JSON, CLI flags): each optional and untyped enough that
/// a wrong one becomes a [`FieldError`] rather than a parse failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub waste: Option<String>,
    pub kg: Option<f64>,
    pub litres: Option<f64>,
    /// A number, so that `2.5` cylinders is reported as not whole instead of cut to 2.
    pub count: Option<f64>,
    pub ph: Option<f64>,
    pub ratio: Option<f64>,
    pub text: Option<String>,
}

impl Fields {
    /// The numeric fields that are set, by name.
    fn numbers(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("kg", self.kg),
            ("litres", self.litres),
            ("count", self.count),
            ("ph", self.ph),
            ("ratio", self.ratio),
        ]
    }

    fn given(&self) -> Vec<&'static str> {
        let mut g: Vec<&'static str> = Vec::new();
        if self.waste.is_some() {
            g.push("waste");
        }
        g.extend(
            self.numbers()
                .into_iter()
                .filter(|(_, v)| v.is_some())
                .map(|(n, _)| n),
        );
        if self.text.is_some() {
            g.push("text");
        }
        g
    }

    /// `self` with every field `patch` sets replaced.
    fn patched(&self, patch: &Fields) -> Fields {
        Fields {
            waste: patch.waste.clone().or_else(|| self.waste.clone()),
            kg: patch.kg.or(self.kg),
            litres: patch.litres.or(self.litres),
            count: patch.count.or(self.count),
            ph: patch.ph.or(self.ph),
            ratio: patch.ratio.or(self.ratio),
            text: patch.text.clone().or_else(|| self.text.clone()),
        }
    }
}

/// One invalid field: which, and what is wrong with it (`kg: must be more than 0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    field: String,
    message: String,
    /// The same problem for a translated page: a Fluent message id (`invalid-…`) and its
    /// arguments. The English `message` is what the API and the CLI say.
    why: Option<(&'static str, Vec<(&'static str, String)>)>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
            why: None,
        }
    }

    /// With the Fluent message id (and its arguments) a page shows instead of `message`.
    pub fn because(mut self, id: &'static str, args: &[(&'static str, String)]) -> FieldError {
        self.why = Some((id, args.to_vec()));
        self
    }

    /// The Fluent message id and arguments, when the problem has one.
    pub fn why(&self) -> Option<(&'static str, &[(&'static str, String)])> {
        self.why.as_ref().map(|(id, a)| (*id, a.as_slice()))
    }

    /// The field's name as the API and the CLI spell it (`kg`, `waste`, `at`, `by`).
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Every invalid field of one request, in the order the fields are checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<FieldError>);

/// Why a correction or withdrawal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("entry {entry} was recorded {age_h} h ago; it can be corrected or withdrawn only within {window_h} h")]
    WindowClosed {
        entry: i64,
        age_h: i64,
        window_h: i64,
    },
    #[error("entry {entry} is withdrawn")]
    Withdrawn { entry: i64 },
}

/// A new entry as given: kind, values, the time it refers to (RFC 3339; `None` = now), who,
/// an optional note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub kind: String,
    pub fields: Fields,
    pub at: Option<String>,
    pub by: Option<String>,
    pub note: Option<String>,
}

/// The current wall time as the gateway's clock gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub ns: i64,
    /// While the clock is not synchronised it may be far behind, so `at` is not held to
    /// `now + 5 min` then (only to the floor); `recorded_at` is what the clock said.
    pub synced: bool,
}

/// A valid new entry, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub values: Values,
    pub at_ns: i64,
    pub by: String,
    pub recorded_ns: i64,
    pub note: Option<String>,
}

/// One revision of an entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The store's row id of this revision: grows by one per revision, in commit order (the
    /// position of a durable consumer).
    pub id: i64,
    /// The entry this is a revision of (the row id of its first revision).
    pub entry: i64,
    /// 1 for the entry as first recorded, then 2, 3, … per correction or withdrawal.
    pub revision: u32,
    pub values: Values,
    /// The time the entry refers to, Unix ns.
    pub at_ns: i64,
    /// Who made this revision.
    pub by: String,
    /// When this revision was recorded, Unix ns.
    pub recorded_ns: i64,
    /// When revision 1 was recorded: the edit window runs from here.
    pub first_recorded_ns: i64,
    pub note: Option<String>,
    pub withdrawn: bool,
    /// Why it was withdrawn (withdrawals only).
    pub reason: Option<String>,
}

/// A correction (new values, time or note; what is not given stays) or a withdrawal.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Correct {
        fields: Fields,
        at: Option<String>,
        note: Option<String>,
    },
    Withdraw {
        reason: String,
    },
}

/// A checked revision, ready for the store (which adds its id, entry and number).
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub values: Values,
    pub at_ns: i64,
    pub by: String,
    pub recorded_ns: i64,
    pub note: Option<String>,
    pub withdrawn: bool,
    pub reason: Option<String>,
}

/// Parses `at` (RFC 3339, any offset) to Unix ns.
pub fn parse_at(s: &str) -> Result<i64, FieldError> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            FieldError::new(
                "at",
                format!("{s:?} is not an RFC 3339 time such as 2026-12-01T08:00:00+03:00"),
            )
            .because("invalid-at-format", &[])
        })
}

fn check_at(at: Option<&str>, now: Now, default_ns: i64, errors: &mut Vec<FieldError>) -> i64 {
    let Some(s) = at else {
        return default_ns;
    };
    match parse_at(s) {
        Err(e) => {
            errors.push(e);
            default_ns
        }
        Ok(ns) if ns < MIN_AT_NS => {
            errors.push(
                FieldError::new(
                    "at",
                    format!("{s} is before 2020-01-01, not a time this plant logged"),
                )
                .because("invalid-at-old", &[]),
            );
            ns
        }
        Ok(ns) if now.synced && ns > now.ns + MAX_FUTURE_NS => {
            errors.push(
                FieldError::new(
                    "at",
                    format!("{s} is in the future (more than 5 minutes after the gateway's clock)"),
                )
                .because("invalid-at-future", &[]),
            );
            ns
        }
        Ok(ns) => ns,
    }
}

fn check_text(field: &str, s: Option<&str>, required: bool, errors: &mut Vec<FieldError>) {
    match s.map(str::trim) {
        None if required => {
            errors.push(FieldError::new(field, "required").because("invalid-required", &[]))
        }
        None => {}
        Some("") => {
            errors.push(FieldError::new(field, "must not be empty").because("invalid-empty", &[]))
        }
        Some(t) if t.chars().count() > MAX_TEXT => {
            let n = t.chars().count().to_string();
            errors.push(
                FieldError::new(field, format!("{n} characters; at most {MAX_TEXT}")).because(
                    "invalid-too-long",
                    &[("n", n), ("max", MAX_TEXT.to_string())],
                ),
            )
        }
        Some(_) => {}
    }
}

fn check_by(by: &str, errors: &mut Vec<FieldError>) {
    if by.trim().is_empty() {
        errors.push(FieldError::new("by", "must not be empty").because("invalid-empty", &[]));
    } else if by.chars().count() > MAX_BY || by.chars().any(char::is_control) {
        errors.push(
            FieldError::new(
                "by",
                format!("must be a name of at most {MAX_BY} characters without control characters"),
            )
            .because("invalid-by", &[("max", MAX_BY.to_string())]),
        );
    }
}

/// `field` must be given, more than 0 and at most `max` (`unit` for the message).
fn positive(
    field: &'static str,
    v: Option<f64>,
    max: f64,
    unit: &str,
    kind: Kind,
    errors: &mut Vec<FieldError>,
) -> f64 {
    match v {
        None => {
            errors.push(
                FieldError::new(field, format!("required for {kind}"))
                    .because("invalid-required", &[]),
            );
            0.0
        }
        Some(x) if !x.is_finite() => {
            errors.push(
                FieldError::new(field, "must be a number").because("invalid-not-a-number", &[]),
            );
            0.0
        }
        Some(x) if x <= 0.0 => {
            errors.push(
                FieldError::new(field, "must be more than 0").because("invalid-not-positive", &[]),
            );
            x
        }
        Some(x) if x > max => {
            errors.push(
                FieldError::new(
                    field,
                    format!("{x} is more than {max} {unit} in one entry, which is not plausible"),
                )
                .because(
                    "invalid-implausible",
                    &[
                        ("x", x.to_string()),
                        ("max", max.to_string()),
                        ("unit", unit.to_owned()),
                    ],
                ),
            );
            x
        }
        Some(x) => x,
    }
}

/// `field` must be given and within `lo..=hi`.
fn within(
    field: &'static str,
    v: Option<f64>,
    (lo, hi): (f64, f64),
    kind: Kind,
    errors: &mut Vec<FieldError>,
) -> f64 {
    match v {
        None => {
            errors.push(
                FieldError::new(field, format!("required for {kind}"))
                    .because("invalid-required", &[]),
            );
            0.0
        }
        Some(x) if !x.is_finite() || x < lo || x > hi => {
            errors.push(
                FieldError::new(field, format!("{x} is outside {lo}–{hi}")).because(
                    "invalid-outside",
                    &[
                        ("x", x.to_string()),
                        ("lo", lo.to_string()),
                        ("hi", hi.to_string()),
                    ],
                ),
            );
            x
        }
        Some(x) => x,
    }
}

fn count(kind: Kind, v: Option<f64>, errors: &mut Vec<FieldError>) -> u32 {
    match v {
        None => {
            errors.push(
                FieldError::new("count", format!("required for {kind}"))
                    .because("invalid-required", &[]),
            );
            0
        }
        Some(x) if x.fract() != 0.0 || !x.is_finite() => {
            errors.push(
                FieldError::new("count", format!("{x} is not a whole number"))
                    .because("invalid-not-whole", &[("x", x.to_string())]),
            );
            0
        }
        Some(x) if x < 1.0 => {
            errors.push(
                FieldError::new("count", "must be at least 1").because("invalid-at-least-one", &[]),
            );
            0
        }
        Some(x) if x > MAX_CYLINDERS => {
            errors.push(FieldError::new(
                "count",
                format!("{x} is more than {MAX_CYLINDERS} cylinders in one entry, which is not plausible"),
            )
            .because(
                "invalid-implausible",
                &[("x", x.to_string()), ("max", MAX_CYLINDERS.to_string()), ("unit", String::new())],
            ));
            0
        }
        Some(x) => x as u32,
    }
}

/// Checks `f` as the values of `kind`; every problem goes to `errors`.
fn values(kind: Kind, f: &Fields, errors: &mut Vec<FieldError>) -> Option<Values> {
    let before = errors.len();
    for name in f.given() {
        if !kind.fields().contains(&name) {
            errors.push(
                FieldError::new(
                    name,
                    format!(
                        "not a value of {kind} (it takes {})",
                        kind.fields().join(", ")
                    ),
                )
                .because("invalid-not-of-kind", &[]),
            );
        }
    }
    let v = match kind {
        Kind::WasteFed => {
            let waste = match f.waste.as_deref().map(str::parse::<Waste>) {
                None => {
                    errors.push(
                        FieldError::new("waste", format!("required for {kind}"))
                            .because("invalid-required", &[]),
                    );
                    None
                }
                Some(Err(e)) => {
                    errors.push(
                        FieldError::new("waste", e.to_string()).because("invalid-waste", &[]),
                    );
                    None
                }
                Some(Ok(w)) => Some(w),
            };
            let kg = positive("kg", f.kg, MAX_KG, "kg", kind, errors);
            waste.map(|waste| Values::WasteFed { waste, kg })
        }
        Kind::WaterAdded => Some(Values::WaterAdded {
            litres: positive("litres", f.litres, MAX_LITRES, "litres", kind, errors),
        }),
        Kind::DigestateOut => match (f.kg, f.litres) {
            (Some(_), Some(_)) => {
                errors.push(
                    FieldError::new("litres", "give kg or litres, not both")
                        .because("invalid-kg-and-litres", &[]),
                );
                None
            }
            (None, None) => {
                errors.push(
                    FieldError::new("kg", format!("kg or litres required for {kind}"))
                        .because("invalid-kg-or-litres", &[]),
                );
                None
            }
            (Some(_), None) => Some(Values::DigestateOut(Amount::Kg(positive(
                "kg", f.kg, MAX_LITRES, "kg", kind, errors,
            )))),
            (None, Some(_)) => Some(Values::DigestateOut(Amount::Litres(positive(
                "litres", f.litres, MAX_LITRES, "litres", kind, errors,
            )))),
        },
        Kind::CylindersFilled => Some(Values::CylindersFilled {
            count: count(kind, f.count, errors),
        }),
        Kind::CylindersDispatched => Some(Values::CylindersDispatched {
            count: count(kind, f.count, errors),
        }),
        Kind::LabPh => Some(Values::LabPh {
            ph: within("ph", f.ph, (0.0, 14.0), kind, errors),
        }),
        Kind::LabFosTac => Some(Values::LabFosTac {
            ratio: within("ratio", f.ratio, (0.0, 2.0), kind, errors),
        }),
        Kind::Note => {
            check_text("text", f.text.as_deref(), true, errors);
            Some(Values::Note {
                text: f.text.as_deref().unwrap_or_default().trim().to_owned(),
            })
        }
    };
    v.filter(|_| errors.len() == before)
}

fn trimmed(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| s.trim().to_owned())
}

impl Draft {
    /// Checks every field; `by` defaults to `default_by` (the API's "local", the CLI's user).
    pub fn validate(&self, now: Now, default_by: &str) -> Result<NewEntry, Invalid> {
        let mut errors = Vec::new();
        let kind = Kind::parse(&self.kind);
        if kind.is_none() {
            errors.push(
                FieldError::new(
                    "kind",
                    format!(
                        "{:?} is not one of {}",
                        self.kind,
                        Kind::ALL.map(Kind::as_str).join(", ")
                    ),
                )
                .because("invalid-kind", &[]),
            );
        }
        let values = kind.and_then(|k| values(k, &self.fields, &mut errors));
        let at_ns = check_at(self.at.as_deref(), now, now.ns, &mut errors);
        let by = self.by.as_deref().unwrap_or(default_by).trim().to_owned();
        check_by(&by, &mut errors);
        check_text("note", self.note.as_deref(), false, &mut errors);
        match values {
            Some(values) if errors.is_empty() => Ok(NewEntry {
                values,
                at_ns,
                by,
                recorded_ns: now.ns,
                note: trimmed(&self.note).filter(|n| !n.is_empty()),
            }),
            _ => Err(Invalid(errors)),
        }
    }
}

/// Whether `current` (the latest revision of its entry) may get a new revision at `now`:
/// within `window_ns` of its first recording, and not withdrawn.
pub fn may_revise(current: &Entry, now_ns: i64, window_ns: i64) -> Result<(), Refused> {
    if current.withdrawn {
        return Err(Refused::Withdrawn {
            entry: current.entry,
        });
    }
    let age = now_ns - current.first_recorded_ns;
    if age > window_ns {
        const H: i64 = 3600 * 1_000_000_000;
        return Err(Refused::WindowClosed {
            entry: current.entry,
            age_h: age / H,
            window_h: window_ns / H,
        });
    }
    Ok(())
}

/// The revision that `change` by `by` at `now` makes of `current` (checked: the window is
/// [`may_revise`]'s business, the values are checked as a new entry's are).
pub fn revise(current: &Entry, change: &Change, by: &str, now: Now) -> Result<Revision, Invalid> {
    let mut errors = Vec::new();
    let by = by.trim().to_owned();
    check_by(&by, &mut errors);
    let rev = match change {
        Change::Correct { fields, at, note } => {
            let kind = current.values.kind();
            // A digestate amount may switch between kg and litres: the one given replaces both.
            let base = match (kind, fields.kg.is_some() || fields.litres.is_some()) {
                (Kind::DigestateOut, true) => Fields::default(),
                _ => current.values.fields(),
            };
            let values = values(kind, &base.patched(fields), &mut errors);
            let at_ns = check_at(at.as_deref(), now, current.at_ns, &mut errors);
            check_text("note", note.as_deref(), false, &mut errors);
            values.map(|values| Revision {
                values,
                at_ns,
                by,
                recorded_ns: now.ns,
                note: match note {
                    Some(n) => Some(n.trim().to_owned()),
                    None => current.note.clone(),
                },
                withdrawn: false,
                reason: None,
            })
        }
        Change::Withdraw { reason } => {
            check_text("reason", Some(reason), true, &mut errors);
            Some(Revision {
                values: current.values.clone(),
                at_ns: current.at_ns,
                by,
                recorded_ns: now.ns,
                note: current.note.clone(),
                withdrawn: true,
                reason: Some(reason.trim().to_owned()),
            })
        }
    };
    match rev {
        Some(r) if errors.is_empty() => Ok(r),
        _ => Err(Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T05:00:00Z, synchronised.
    const NOW: Now = Now {
        ns: 1_796_101_200 * 1_000_000_000,
        synced: true,
    };

    fn draft(kind: &str, f: impl FnOnce(&mut Fields)) -> Draft {
        let mut fields = Fields::default();
        f(&mut fields);
        Draft {
            kind: kind.into(),
            fields,
            ..Draft::default()
        }
    }

    /// `d` is refused with exactly these `field: message` errors.
    fn check(d: &Draft, expected: &[&str]) {
        let got = match d.validate(NOW, "local") {
            Ok(e) => panic!("{d:?} accepted as {e:?}"),
            Err(Invalid(errors)) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        assert_eq!(got, expected, "{d:?}");
    }

    #[test]
    fn a_valid_entry_keeps_its_values_and_defaults_at_and_by() {
        let e = draft("waste_fed", |f| {
            f.waste = Some("household".into());
            f.kg = Some(120.0);
        })
        .validate(NOW, "local")
        .expect("valid");
        assert_eq!(
            e,
            NewEntry {
                values: Values::WasteFed {
                    waste: Waste::Household,
                    kg: 120.0
                },
                at_ns: NOW.ns,
                by: "local".into(),
                recorded_ns: NOW.ns,
                note: None,
            }
        );
        let mut d = draft("lab_ph", |f| f.ph = Some(7.1));
        d.at = Some("2026-12-01T08:00:00+03:00".into());
        d.by = Some(" amina ".into());
        d.note = Some("sample from the outlet".into());
        let e = d.validate(NOW, "local").expect("valid");
        assert_eq!((e.at_ns, e.by.as_str()), (NOW.ns, "amina"));
        assert_eq!(e.note.as_deref(), Some("sample from the outlet"));
    }

    #[test]
    fn each_kind_checks_its_values() {
        let ok = |d: Draft| d.validate(NOW, "local").expect("valid").values;
        assert_eq!(
            ok(draft("water_added", |f| f.litres = Some(300.0))),
            Values::WaterAdded { litres: 300.0 }
        );
        assert_eq!(
            ok(draft("digestate_out", |f| f.litres = Some(80.0))),
            Values::DigestateOut(Amount::Litres(80.0))
        );
        assert_eq!(
            ok(draft("cylinders_dispatched", |f| f.count = Some(12.0))),
            Values::CylindersDispatched { count: 12 }
        );
        assert_eq!(
            ok(draft("lab_fos_tac", |f| f.ratio = Some(0.28))),
            Values::LabFosTac { ratio: 0.28 }
        );
        assert_eq!(
            ok(draft("note", |f| f.text = Some(" inlet cleaned ".into()))),
            Values::Note {
                text: "inlet cleaned".into()
            }
        );
    }

    #[test]
    fn every_rule_names_its_field() {
        let waste = |w: &str, kg: f64| {
            draft("waste_fed", |f| {
                f.waste = Some(w.into());
                f.kg = Some(kg);
            })
        };
        check(&waste("household", 0.0), &["kg: must be more than 0"]);
        check(&waste("household", -5.0), &["kg: must be more than 0"]);
        check(
            &waste("household", 25_000.0),
            &["kg: 25000 is more than 20000 kg in one entry, which is not plausible"],
        );
        check(
            &waste("leaves", 10.0),
            &["waste: \"leaves\" is not one of household, market, animal, agricultural"],
        );
        check(
            &draft("waste_fed", |f| f.kg = Some(10.0)),
            &["waste: required for waste_fed"],
        );
        check(
            &draft("waste_fed", |f| f.waste = Some("market".into())),
            &["kg: required for waste_fed"],
        );
        check(
            &draft("water_added", |f| f.litres = Some(0.0)),
            &["litres: must be more than 0"],
        );
        check(
            &draft("water_added", |f| f.litres = Some(1e6)),
            &["litres: 1000000 is more than 100000 litres in one entry, which is not plausible"],
        );
        check(
            &draft("digestate_out", |_| {}),
            &["kg: kg or litres required for digestate_out"],
        );
        check(
            &draft("digestate_out", |f| {
                f.kg = Some(1.0);
                f.litres = Some(1.0)
            }),
            &["litres: give kg or litres, not both"],
        );
        check(
            &draft("digestate_out", |f| f.kg = Some(-1.0)),
            &["kg: must be more than 0"],
        );
        check(
            &draft("cylinders_filled", |f| f.count = Some(0.0)),
            &["count: must be at least 1"],
        );
        check(
            &draft("cylinders_filled", |f| f.count = Some(2.5)),
            &["count: 2.5 is not a whole number"],
        );
        check(
            &draft("cylinders_dispatched", |f| f.count = Some(5000.0)),
            &["count: 5000 is more than 1000 cylinders in one entry, which is not plausible"],
        );
        check(
            &draft("cylinders_dispatched", |_| {}),
            &["count: required for cylinders_dispatched"],
        );
        check(
            &draft("lab_ph", |f| f.ph = Some(15.0)),
            &["ph: 15 is outside 0–14"],
        );
        check(
            &draft("lab_ph", |f| f.ph = Some(-0.1)),
            &["ph: -0.1 is outside 0–14"],
        );
        check(
            &draft("lab_fos_tac", |f| f.ratio = Some(2.5)),
            &["ratio: 2.5 is outside 0–2"],
        );
        check(
            &draft("note", |f| f.text = Some("  ".into())),
            &["text: must not be empty"],
        );
        check(
            &draft("note", |f| f.text = Some("x".repeat(MAX_TEXT + 1))),
            &["text: 2001 characters; at most 2000"],
        );
        check(&draft("note", |_| {}), &["text: required"]);
        check(
            &draft("feeding", |_| {}),
            &["kind: \"feeding\" is not one of waste_fed, water_added, digestate_out, cylinders_filled, cylinders_dispatched, lab_ph, lab_fos_tac, note"],
        );
        check(
            &draft("lab_ph", |f| {
                f.ph = Some(7.0);
                f.kg = Some(3.0)
            }),
            &["kg: not a value of lab_ph (it takes ph)"],
        );
    }

    #[test]
    fn at_by_and_note_are_checked() {
        let with = |at: Option<&str>, by: Option<&str>, note: Option<&str>| Draft {
            at: at.map(Into::into),
            by: by.map(Into::into),
            note: note.map(Into::into),
            ..draft("lab_ph", |f| f.ph = Some(7.0))
        };
        check(
            &with(Some("yesterday"), None, None),
            &["at: \"yesterday\" is not an RFC 3339 time such as 2026-12-01T08:00:00+03:00"],
        );
        check(
            &with(Some("2019-12-31T23:59:59Z"), None, None),
            &["at: 2019-12-31T23:59:59Z is before 2020-01-01, not a time this plant logged"],
        );
        check(
            &with(Some("2026-12-01T05:06:00Z"), None, None),
            &["at: 2026-12-01T05:06:00Z is in the future (more than 5 minutes after the gateway's clock)"],
        );
        // Four minutes ahead is a phone's clock, not the future.
        assert!(with(Some("2026-12-01T05:04:00Z"), None, None)
            .validate(NOW, "local")
            .is_ok());
        // An unsynchronised clock may be far behind: the future bound is not applied.
        assert!(with(Some("2027-06-01T00:00:00Z"), None, None)
            .validate(
                Now {
                    synced: false,
                    ..NOW
                },
                "local"
            )
            .is_ok());
        check(&with(None, Some(" "), None), &["by: must not be empty"]);
        check(
            &with(None, Some(&"a".repeat(65)), None),
            &["by: must be a name of at most 64 characters without control characters"],
        );
        check(&with(None, None, Some("")), &["note: must not be empty"]);
    }

    #[test]
    fn every_invalid_field_is_reported_not_only_the_first() {
        let mut d = draft("waste_fed", |f| {
            f.waste = Some("leaves".into());
            f.kg = Some(0.0);
        });
        d.at = Some("soon".into());
        check(
            &d,
            &[
                "waste: \"leaves\" is not one of household, market, animal, agricultural",
                "kg: must be more than 0",
                "at: \"soon\" is not an RFC 3339 time such as 2026-12-01T08:00:00+03:00",
            ],
        );
    }

    fn entry(recorded_ns: i64) -> Entry {
        Entry {
            id: 1,
            entry: 1,
            revision: 1,
            values: Values::WasteFed {
                waste: Waste::Market,
                kg: 120.0,
            },
            at_ns: recorded_ns,
            by: "amina".into(),
            recorded_ns,
            first_recorded_ns: recorded_ns,
            note: Some("morning feed".into()),
            withdrawn: false,
            reason: None,
        }
    }

    const H: i64 = 3600 * 1_000_000_000;

    #[test]
    fn a_correction_replaces_what_it_gives_and_keeps_the_rest() {
        let e = entry(NOW.ns - H);
        let change = Change::Correct {
            fields: Fields {
                kg: Some(130.0),
                ..Fields::default()
            },
            at: None,
            note: None,
        };
        let r = revise(&e, &change, "baraka", NOW).expect("valid");
        assert_eq!(
            r,
            Revision {
                values: Values::WasteFed {
                    waste: Waste::Market,
                    kg: 130.0
                },
                at_ns: e.at_ns,
                by: "baraka".into(),
                recorded_ns: NOW.ns,
                note: Some("morning feed".into()),
                withdrawn: false,
                reason: None,
            }
        );
        let bad = Change::Correct {
            fields: Fields {
                kg: Some(0.0),
                ph: Some(7.0),
                ..Fields::default()
            },
            at: None,
            note: None,
        };
        assert_eq!(
            revise(&e, &bad, "baraka", NOW).map_err(|e| e.to_string()),
            Err(
                "ph: not a value of waste_fed (it takes waste, kg); kg: must be more than 0".into()
            )
        );
    }

    #[test]
    fn a_withdrawal_keeps_the_values_and_needs_a_reason() {
        let e = entry(NOW.ns - H);
        let w = Change::Withdraw {
            reason: "entered twice".into(),
        };
        let r = revise(&e, &w, "amina", NOW).expect("valid");
        assert!(r.withdrawn);
        assert_eq!(r.values, e.values);
        assert_eq!(r.reason.as_deref(), Some("entered twice"));
        let none = Change::Withdraw { reason: " ".into() };
        assert_eq!(
            revise(&e, &none, "amina", NOW).map_err(|e| e.to_string()),
            Err("reason: must not be empty".into())
        );
    }

    #[test]
    fn the_edit_window_runs_from_the_first_recording() {
        let window = 24 * H;
        assert_eq!(may_revise(&entry(NOW.ns - 24 * H), NOW.ns, window), Ok(()));
        let late = entry(NOW.ns - 25 * H);
        assert_eq!(
            may_revise(&late, NOW.ns, window),
            Err(Refused::WindowClosed {
                entry: 1,
                age_h: 25,
                window_h: 24
            })
        );
        // A later revision does not reopen the window.
        let revised = Entry {
            revision: 2,
            recorded_ns: NOW.ns - H,
            ..late
        };
        assert!(may_revise(&revised, NOW.ns, window).is_err());
        let withdrawn = Entry {
            withdrawn: true,
            ..entry(NOW.ns - H)
        };
        assert_eq!(
            may_revise(&withdrawn, NOW.ns, window),
            Err(Refused::Withdrawn { entry: 1 })
        );
        assert_eq!(
            Refused::WindowClosed {
                entry: 1,
                age_h: 25,
                window_h: 24
            }
            .to_string(),
            "entry 1 was recorded 25 h ago; it can be corrected or withdrawn only within 24 h"
        );
    }

    #[test]
    fn stored_values_round_trip_through_fields() {
        for v in [
            Values::WasteFed {
                waste: Waste::Animal,
                kg: 1.5,
            },
            Values::DigestateOut(Amount::Kg(3.0)),
            Values::DigestateOut(Amount::Litres(4.0)),
            Values::CylindersFilled { count: 3 },
            Values::LabPh { ph: 7.2 },
            Values::Note { text: "x".into() },
        ] {
            assert_eq!(Values::stored(v.kind(), &v.fields()), Ok(v));
        }
    }
}
