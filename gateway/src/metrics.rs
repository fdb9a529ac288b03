//! The one place that writes Prometheus text: a [`Registry`] that every component registers
//! its typed metrics with, and the [`Encoder`] that renders them for `/metrics`.
//!
//! Components own their metrics: the broker its logins and refusals (`broker::Metrics`), the
//! MQTT source its messages and rejects, the committer its commits, the InfluxDB writer its
//! requests, the Modbus pollers their per-device stats, the store the gauges it is asked for at
//! scrape time. A component registers plain metrics ([`Registry::counter`], [`Registry::gauge`],
//! [`Registry::float_gauge`], [`Registry::counter_family`], [`Registry::seconds`]) and keeps
//! the returned handles; a component whose series are only known while running (one per Modbus
//! device, one per consumer) registers a [`Collector`] that writes its families through the
//! [`Encoder`].
//!
//! ```text
//! pub struct Metrics { pub synced: Arc<Gauge>, pub offset: Arc<FloatGauge> }
//! impl Metrics {
//!     pub fn register(r: &mut Registry) -> Metrics {
//!         Metrics {
//!             synced: r.gauge("gkgw_clock_synced", "1 while the kernel clock is synchronised."),
//!             offset: r.float_gauge("gkgw_clock_offset_seconds", "Estimated clock offset."),
//!         }
//!     }
//! }
//! // topology.rs: let clock_metrics = Arc::new(clock::Metrics::register(&mut registry));
//! ```
//!
//! Why our own ~400 lines and not the `prometheus-client` crate: the hot path here is one
//! relaxed atomic add, and every label value is a closed enum, so a labelled counter is an
//! array of atomics indexed by the enum, with no lock and no hash lookup (prometheus-client's
//! `Family` takes a read lock and hashes the label set on every increment); its text encoder is
//! OpenMetrics (it appends `_total` itself, names the family without it in `# TYPE`, ends with
//! `# EOF`), which would change what the dashboards and tests query; and it adds a derive macro
//! crate to a build that runs on two cores.
//!
//! Architecture invariant: only this module writes `# HELP` and `# TYPE` lines.

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A value of a label that only takes the values of a closed enum (`reason`, `result`).
///
/// `ALL` lists every value in declaration order, and `index` is the position in `ALL`
/// (`self as usize` for a field-less enum); [`CounterFamily`] keeps one atomic per value.
pub trait LabelValue: Copy + Send + Sync + 'static {
    const ALL: &'static [Self];
    fn index(self) -> usize;
    fn as_str(self) -> &'static str;
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (connections open now).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// A gauge that is not a whole number (a clock offset in seconds): the `f64`'s bits in one
/// atomic, so setting it is one store.
#[derive(Debug, Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

/// A counter of seconds, kept as whole microseconds so that adding stays one atomic add.
#[derive(Debug, Default)]
pub struct Seconds(AtomicU64);

impl Seconds {
    pub fn add(&self, d: Duration) {
        self.0
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn get(&self) -> f64 {
        self.0.load(Relaxed) as f64 / 1e6
    }
}

/// A counter with one label whose values are the enum `L`: one atomic per value, every value
/// rendered (zeros too, so a rate over a reason that never happened is 0, not absent).
#[derive(Debug)]
pub struct CounterFamily<L> {
    values: Box<[AtomicU64]>,
    _label: PhantomData<L>,
}

impl<L: LabelValue> Default for CounterFamily<L> {
    fn default() -> Self {
        debug_assert!(
            L::ALL.iter().enumerate().all(|(i, l)| l.index() == i),
            "LabelValue::index must be the position in ALL"
        );
        CounterFamily {
            values: L::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            _label: PhantomData,
        }
    }
}

impl<L: LabelValue> CounterFamily<L> {
    pub fn inc(&self, l: L) {
        self.values[l.index()].fetch_add(1, Relaxed);
    }

    pub fn get(&self, l: L) -> u64 {
        self.values[l.index()].load(Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.values.iter().map(|v| v.load(Relaxed)).sum()
    }
}

/// Something that writes metric families at scrape time.
pub trait Collector: Send + Sync + 'static {
    fn collect(&self, out: &mut Encoder);
}

impl<C: Collector + ?Sized> Collector for Arc<C> {
    fn collect(&self, out: &mut Encoder) {
        (**self).collect(out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value: integers are written as integers, floats in Rust's shortest round-trip
/// form (`NaN`, `+Inf`, `-Inf` as Prometheus spells them).
#[derive(Debug, Clone, Copy)]
pub enum Number {
    U(u64),
    I(i64),
    F(f64),
}

impl From<u64> for Number {
    fn from(v: u64) -> Self {
        Number::U(v)
    }
}

impl From<i64> for Number {
    fn from(v: i64) -> Self {
        Number::I(v)
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Self {
        Number::F(v)
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Number::U(v) => write!(f, "{v}"),
            Number::I(v) => write!(f, "{v}"),
            Number::F(v) if v.is_nan() => f.write_str("NaN"),
            Number::F(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Number::F(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Number::F(v) => write!(f, "{v}"),
        }
    }
}

/// Writes the text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per family,
/// then its samples; label values and help text escaped.
#[derive(Default)]
pub struct Encoder {
    out: String,
    families: Vec<&'static str>,
}

/// The samples of one family, written after its `# HELP`/`# TYPE` lines.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Encoder {
    /// Starts a family. Its `# HELP` and `# TYPE` are written now, so a family without samples
    /// (no consumer configured) still says it exists.
    pub fn family(&mut self, name: &'static str, help: &str, kind: Kind) -> Family<'_> {
        debug_assert!(
            !self.families.contains(&name),
            "metric family {name} rendered twice"
        );
        self.families.push(name);
        let _ = write!(self.out, "# HELP {name} ");
        escape(&mut self.out, help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &'static str, help: &str, kind: Kind, v: impl Into<Number>) {
        self.family(name, help, kind).sample(&[], v);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    pub fn sample(&mut self, labels: &[(&str, &str)], v: impl Into<Number>) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(self.out, v, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", v.into());
    }
}

/// Backslash and newline are escaped in help text and label values, the double quote in label
/// values only.
fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A registered metric whose name and help were given at registration.
struct Named<M> {
    name: &'static str,
    help: &'static str,
    metric: Arc<M>,
    /// The label name, for a family.
    label: &'static str,
}

impl Collector for Named<Counter> {
    fn collect(&self, out: &mut Encoder) {
        out.single(self.name, self.help, Kind::Counter, self.metric.get());
    }
}

impl Collector for Named<Gauge> {
    fn collect(&self, out: &mut Encoder) {
        out.single(self.name, self.help, Kind::Gauge, self.metric.get());
    }
}

impl Collector for Named<FloatGauge> {
    fn collect(&self, out: &mut Encoder) {
        out.single(self.name, self.help, Kind::Gauge, self.metric.get());
    }
}

impl Collector for Named<Seconds> {
    fn collect(&self, out: &mut Encoder) {
        out.single(self.name, self.help, Kind::Counter, self.metric.get());
    }
}

impl<L: LabelValue> Collector for Named<CounterFamily<L>> {
    fn collect(&self, out: &mut Encoder) {
        let mut f = out.family(self.name, self.help, Kind::Counter);
        for l in L::ALL {
            f.sample(&[(self.label, l.as_str())], self.metric.get(*l));
        }
    }
}

/// Every metric of the gateway, in registration order. Built at start-up (`&mut self`), then
/// shared read-only with the web server.
#[derive(Default)]
pub struct Registry {
    collectors: Vec<Box<dyn Collector>>,
}

impl Registry {
    fn named<M>(&mut self, name: &'static str, help: &'static str, label: &'static str) -> Arc<M>
    where
        M: Default,
        Named<M>: Collector,
    {
        let metric = Arc::new(M::default());
        self.collectors.push(Box::new(Named {
            name,
            help,
            metric: metric.clone(),
            label,
        }));
        metric
    }

    pub fn counter(&mut self, name: &'static str, help: &'static str) -> Arc<Counter> {
        self.named(name, help, "")
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> Arc<Gauge> {
        self.named(name, help, "")
    }

    /// A gauge with a fractional value (`FloatGauge::set(f64)`).
    pub fn float_gauge(&mut self, name: &'static str, help: &'static str) -> Arc<FloatGauge> {
        self.named(name, help, "")
    }

    /// A counter of seconds (`…_seconds_total`), rendered as a float.
    pub fn seconds(&mut self, name: &'static str, help: &'static str) -> Arc<Seconds> {
        self.named(name, help, "")
    }

    /// A counter labelled `label`, one series per value of `L`.
    pub fn counter_family<L: LabelValue>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
    ) -> Arc<CounterFamily<L>> {
        self.named(name, help, label)
    }

    /// A collector that writes its own families at scrape time.
    pub fn register(&mut self, c: impl Collector) {
        self.collectors.push(Box::new(c));
    }

    /// The text exposition of everything registered, in registration order.
    pub fn render(&self) -> String {
        let mut out = Encoder {
            out: String::with_capacity(8192),
            families: Vec::new(),
        };
        for c in &self.collectors {
            c.collect(&mut out);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Colour {
        Red,
        Green,
    }

    impl LabelValue for Colour {
        const ALL: &'static [Colour] = &[Colour::Red, Colour::Green];
        fn index(self) -> usize {
            self as usize
        }
        fn as_str(self) -> &'static str {
            match self {
                Colour::Red => "red",
                Colour::Green => "green",
            }
        }
    }

    struct Devices(Vec<(&'static str, u64)>);

    impl Collector for Devices {
        fn collect(&self, out: &mut Encoder) {
            let mut f = out.family("t_device_reads_total", "Reads per device.", Kind::Counter);
            for (d, n) in &self.0 {
                f.sample(&[("device", d), ("bus", "b1")], *n);
            }
        }
    }

    #[test]
    fn a_small_registry_renders_exactly() {
        let mut r = Registry::default();
        let c = r.counter("t_messages_total", "Messages.");
        let g = r.gauge("t_connections", "Open now.\nSecond line with a \\.");
        let s = r.seconds("t_busy_seconds_total", "Time busy.");
        let o = r.float_gauge("t_offset_seconds", "Offset.");
        let f = r.counter_family::<Colour>("t_seen_total", "Seen, by colour.", "colour");
        r.register(Devices(vec![("pump \"A\"\nB", 3), ("c:\\d", 0)]));
        c.add(41);
        c.inc();
        g.inc();
        g.inc();
        g.dec();
        s.add(Duration::from_micros(1_500_250));
        o.set(-0.125);
        f.inc(Colour::Green);
        f.inc(Colour::Green);
        assert_eq!((f.get(Colour::Red), f.total()), (0, 2));
        assert_eq!(
            r.render(),
            "# HELP t_messages_total Messages.\n\
             # TYPE t_messages_total counter\n\
             t_messages_total 42\n\
             # HELP t_connections Open now.\\nSecond line with a \\\\.\n\
             # TYPE t_connections gauge\n\
             t_connections 1\n\
             # HELP t_busy_seconds_total Time busy.\n\
             # TYPE t_busy_seconds_total counter\n\
             t_busy_seconds_total 1.50025\n\
             # HELP t_offset_seconds Offset.\n\
             # TYPE t_offset_seconds gauge\n\
             t_offset_seconds -0.125\n\
             # HELP t_seen_total Seen, by colour.\n\
             # TYPE t_seen_total counter\n\
             t_seen_total{colour=\"red\"} 0\n\
             t_seen_total{colour=\"green\"} 2\n\
             # HELP t_device_reads_total Reads per device.\n\
             # TYPE t_device_reads_total counter\n\
             t_device_reads_total{device=\"pump \\\"A\\\"\\nB\",bus=\"b1\"} 3\n\
             t_device_reads_total{device=\"c:\\\\d\",bus=\"b1\"} 0\n"
        );
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        let text = |n: Number| n.to_string();
        assert_eq!(text(Number::U(7)), "7");
        assert_eq!(text(Number::I(-3)), "-3");
        assert_eq!(text(Number::F(3.0)), "3");
        assert_eq!(text(Number::F(0.25)), "0.25");
        assert_eq!(text(Number::F(f64::NAN)), "NaN");
        assert_eq!(text(Number::F(f64::INFINITY)), "+Inf");
        assert_eq!(text(Number::F(f64::NEG_INFINITY)), "-Inf");
    }
}
