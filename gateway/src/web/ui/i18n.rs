//! The dashboard's languages: English and Kiswahili, from the Fluent files `locales/en.ftl` and
//! `locales/sw.ftl` compiled into the binary. A page asks [`Tr::s`] (a plain message) or
//! [`Tr::a`] (with arguments); a missing message shows its key and is logged once.
//!
//! *Invariant: both files hold the same message ids, and every id the pages use is in both
//! (tests `both_languages_have_the_same_messages` and `every_message_the_pages_use_exists`).*

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

pub const EN_FTL: &str = include_str!("../../../locales/en.ftl");
pub const SW_FTL: &str = include_str!("../../../locales/sw.ftl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Sw,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Sw => "sw",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "sw" => Some(Lang::Sw),
            _ => None,
        }
    }

    /// The other language (the switch in the header).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Sw,
            Lang::Sw => Lang::En,
        }
    }
}

fn bundle(lang: &str, src: &str) -> FluentBundle<FluentResource> {
    let res = FluentResource::try_new(src.to_owned())
        .unwrap_or_else(|(_, errs)| panic!("locales/{lang}.ftl does not parse: {errs:?}"));
    let id: unic_langid::LanguageIdentifier = lang.parse().expect("language id");
    let mut b = FluentBundle::new_concurrent(vec![id]);
    // Isolation marks around placeables confuse plain-text pages and tests.
    b.set_use_isolating(false);
    b.add_resource(res)
        .unwrap_or_else(|errs| panic!("locales/{lang}.ftl: {errs:?}"));
    b
}

struct Bundles {
    en: FluentBundle<FluentResource>,
    sw: FluentBundle<FluentResource>,
}

fn bundles() -> &'static Bundles {
    static B: OnceLock<Bundles> = OnceLock::new();
    B.get_or_init(|| Bundles {
        en: bundle("en", EN_FTL),
        sw: bundle("sw", SW_FTL),
    })
}

/// A page's translator.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    pub lang: Lang,
}

impl Tr {
    pub fn new(lang: Lang) -> Tr {
        Tr { lang }
    }

    /// The message `id`.
    pub fn s(&self, id: &str) -> String {
        self.format(id, None)
    }

    /// The message `id` with arguments (numbers or text).
    pub fn a(&self, id: &str, args: &[(&str, Arg)]) -> String {
        let mut fa = FluentArgs::new();
        for (k, v) in args {
            match v {
                Arg::N(n) => fa.set(*k, FluentValue::from(*n)),
                Arg::S(s) => fa.set(*k, FluentValue::from(s.clone())),
            }
        }
        self.format(id, Some(&fa))
    }

    /// The plain message `id`, or None when there is none (nothing is logged).
    pub fn find(&self, id: &str) -> Option<String> {
        let b = match self.lang {
            Lang::En => &bundles().en,
            Lang::Sw => &bundles().sw,
        };
        let pattern = b.get_message(id)?.value()?;
        let mut errors = Vec::new();
        Some(b.format_pattern(pattern, None, &mut errors).into_owned())
    }

    /// An alarm's message in this language: a built-in rule's own text (its English message
    /// in `en.ftl` as `alarm-{rule}`) is translated; a message the site wrote is shown as
    /// written.
    pub fn alarm(&self, rule: &str, message: &str) -> String {
        let ids = [
            format!("alarm-{}", rule.replace('_', "-")),
            "alarm-stale".to_owned(),
            "alarm-orphan".to_owned(),
            "alarm-disk-full".to_owned(),
        ];
        ids.iter()
            .find(|id| Tr::new(Lang::En).find(id).as_deref() == Some(message))
            .and_then(|id| self.find(id))
            .unwrap_or_else(|| message.to_owned())
    }

    fn format(&self, id: &str, args: Option<&FluentArgs>) -> String {
        let b = match self.lang {
            Lang::En => &bundles().en,
            Lang::Sw => &bundles().sw,
        };
        let Some(pattern) = b.get_message(id).and_then(|m| m.value()) else {
            static LOGGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
            let mut l = LOGGED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if l.get_or_insert_with(HashSet::new).insert(id.to_owned()) {
                tracing::error!(id, lang = self.lang.code(), "dashboard: no such message");
            }
            return id.to_owned();
        };
        let mut errors = Vec::new();
        b.format_pattern(pattern, args, &mut errors).into_owned()
    }
}

/// An argument of a message.
#[derive(Debug, Clone)]
pub enum Arg {
    N(f64),
    S(String),
}

/// The message ids of a Fluent file (top-level `id = …` lines).
pub fn ids(src: &str) -> Vec<String> {
    src.lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_messages() {
        let en: std::collections::BTreeSet<String> = ids(EN_FTL).into_iter().collect();
        let sw: std::collections::BTreeSet<String> = ids(SW_FTL).into_iter().collect();
        let only_en: Vec<_> = en.difference(&sw).collect();
        let only_sw: Vec<_> = sw.difference(&en).collect();
        assert!(
            only_en.is_empty() && only_sw.is_empty(),
            "missing in sw.ftl: {only_en:?}; missing in en.ftl: {only_sw:?}"
        );
        assert!(en.len() > 50, "{} messages", en.len());
        // Each parses and formats in both languages.
        for id in &en {
            for lang in [Lang::En, Lang::Sw] {
                let b = match lang {
                    Lang::En => &bundles().en,
                    Lang::Sw => &bundles().sw,
                };
                assert!(b.get_message(id).and_then(|m| m.value()).is_some(), "{id}");
            }
        }
    }

    /// Every `.s("id")` / `.a("id", …)` literal in the dashboard's source is a message of both
    /// files (a string added to a page without its translation fails here).
    #[test]
    fn every_built_in_alarm_message_is_translated() {
        let cfg = crate::alarm::rules::Config::default();
        let cat = crate::plant::Catalogue::builtin();
        let rules = crate::alarm::rules::compile(&cfg, &|q| cat.get(q).is_some()).expect("rules");
        assert!(rules.len() > 25, "{} rules", rules.len());
        let sw = Tr::new(Lang::Sw);
        let mut messages: Vec<(String, String)> = rules
            .iter()
            .map(|r| (r.name.to_string(), r.message.clone()))
            .collect();
        messages.push((
            "stale.digester.pressure".into(),
            crate::alarm::engine::STALE_MESSAGE.into(),
        ));
        messages.push((
            "gone_rule".into(),
            crate::alarm::engine::ORPHAN_MESSAGE.into(),
        ));
        messages.push((
            crate::alarm::engine::DISK_FULL.into(),
            crate::alarm::engine::DISK_FULL_MESSAGE.into(),
        ));
        for (rule, message) in &messages {
            let said = sw.alarm(rule, message);
            assert_ne!(
                &said, message,
                "{rule}: {message:?} has no Kiswahili (alarm-… in the .ftl files)"
            );
            assert_eq!(Tr::new(Lang::En).alarm(rule, message), *message);
        }
        // A message the site wrote stays as written.
        assert_eq!(sw.alarm("leak", "our own words"), "our own words");
    }

    #[test]
    fn every_message_the_pages_use_exists() {
        let en: HashSet<String> = ids(EN_FTL).into_iter().collect();
        let sw: HashSet<String> = ids(SW_FTL).into_iter().collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/ui");
        let mut used = 0;
        let pages = std::fs::read_dir(&dir)
            .expect("src/web/ui")
            .map(|e| e.expect("entry").path());
        // The sign-in and refusal pages are the gateway's too.
        let others = ["auth.rs", "users.rs"].map(|f| dir.parent().expect("web").join(f));
        for path in pages.chain(others) {
            if path.extension().and_then(|e| e.to_str()) != Some("rs")
                || path.file_name().and_then(|n| n.to_str()) == Some("i18n.rs")
            {
                continue;
            }
            let src = std::fs::read_to_string(&path).expect("source");
            for pat in [".s(\"", ".a(\"", "msg(\""] {
                for (at, _) in src.match_indices(pat) {
                    let rest = &src[at + pat.len()..];
                    let id = &rest[..rest.find('"').expect("closing quote")];
                    if id.is_empty() || id.contains(' ') {
                        continue;
                    }
                    used += 1;
                    assert!(
                        en.contains(id) && sw.contains(id),
                        "{}: message {id:?} missing (en: {}, sw: {})",
                        path.display(),
                        en.contains(id),
                        sw.contains(id)
                    );
                }
            }
        }
        assert!(used > 50, "{used} uses found");
        // The ids the pages build from names: every logbook kind, its fields and waste.
        let mut built = vec!["field-at".to_owned(), "field-note".to_owned()];
        for k in crate::logbook::Kind::ALL {
            built.push(format!("kind-{}", k.as_str().replace('_', "-")));
            for f in k.fields() {
                built.push(format!("field-{f}"));
            }
        }
        for w in crate::plant::kpi::Waste::ALL {
            built.push(format!("waste-{}", w.as_str().replace('_', "-")));
        }
        built.push("field-reason".to_owned());
        for d in crate::web::users::DONE {
            built.push(format!("users-done-{d}"));
        }
        for e in crate::web::users::ERRORS {
            built.push(format!("users-error-{e}"));
        }
        for id in built {
            assert!(
                en.contains(&id) && sw.contains(&id),
                "message {id:?} missing"
            );
        }
    }

    #[test]
    fn arguments_and_plurals_format() {
        let en = Tr::new(Lang::En);
        let sw = Tr::new(Lang::Sw);
        assert_eq!(
            en.a("alarms-active", &[("count", Arg::N(1.0))]),
            "1 active alarm"
        );
        assert_eq!(
            en.a("alarms-active", &[("count", Arg::N(3.0))]),
            "3 active alarms"
        );
        assert_eq!(
            sw.a("alarms-active", &[("count", Arg::N(3.0))]),
            "Kengele 3 zinazolia"
        );
        assert_eq!(en.s("no-such-message-id"), "no-such-message-id");
    }
}
