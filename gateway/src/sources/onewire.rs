//! 1-Wire temperature sensors (DS18B20 and its family) through the Linux `w1` sysfs files:
//! `[onewire]` binds each `[[onewire.sensor]]` id to a °C quantity at an instance
//! ([`resolve`]); [`run`], one task for the bus, reads every sensor each `interval_ms` on the
//! blocking pool (the driver converts on read, ~750 ms a sensor) and offers one reading per
//! sensor to the intake (with a spill, like the Modbus pollers). A bad read is a reading with
//! `{field}_quality` = [`Bad::as_str`] and `Quality::Bad`, never a value; a sensor whose
//! directory is missing is a bad reading `missing`, logged once (and again when it is back).
//!
//! The kernel's `w1_therm` driver gives each sensor a directory
//! `/sys/bus/w1/devices/<family>-<serial>/` whose `w1_slave` file holds two lines:
//! ```text
//! 72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//! 72 01 4b 46 7f ff 0e 10 57 t=23125
//! ```
//! the scratchpad with the CRC verdict, then the temperature in millidegrees Celsius. Two
//! things there are bad readings, never values: a `NO` CRC verdict (a noisy bus, a long cable),
//! and 85.000 °C with the power-on scratchpad (`50 05 …`: the sensor lost power, or was read
//! before a conversion finished). A real 85 °C (the scratchpad says it converted) is a value.

use std::path::{Path, PathBuf};

/// Family codes of the temperature sensors `w1_therm` serves: DS18S20 (10), DS1822 (22),
/// DS18B20 (28), DS1825 (3b), MAX31850 (42).
pub const THERMOMETER_FAMILIES: [&str; 5] = ["10", "22", "28", "3b", "42"];

/// Why a `w1_slave` read is not a temperature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Bad {
    #[error("crc mismatch (the bus is noisy or the cable too long)")]
    Crc,
    #[error("power-on value 85 °C (the sensor lost power or had not converted yet)")]
    PowerOn,
    #[error("{0} °C is outside the sensor's range (−55 to 125 °C)")]
    OutOfRange(f64),
    #[error("unreadable w1_slave contents: {0}")]
    Malformed(String),
}

impl Bad {
    /// The name used in `{field}_quality`, like the other sources' bad values.
    pub fn as_str(&self) -> &'static str {
        match self {
            Bad::Crc => "crc_error",
            Bad::PowerOn => "power_on_value",
            Bad::OutOfRange(_) => "out_of_range",
            Bad::Malformed(_) => "unreadable",
        }
    }
}

/// The temperature in °C that a `w1_slave` file's contents say, or why it is bad.
pub fn parse_w1_slave(text: &str) -> Result<f64, Bad> {
    let mut lines = text.lines();
    let (first, second) = match (lines.next(), lines.next()) {
        (Some(a), Some(b)) => (a.trim(), b.trim()),
        _ => {
            return Err(Bad::Malformed(format!(
                "{} line(s), expected 2",
                text.lines().count()
            )))
        }
    };
    match first.rsplit(' ').next() {
        Some("YES") => {}
        Some("NO") => return Err(Bad::Crc),
        _ => return Err(Bad::Malformed(format!("no crc verdict in {first:?}"))),
    }
    let (scratchpad, t) = second
        .rsplit_once("t=")
        .ok_or_else(|| Bad::Malformed(format!("no t= in {second:?}")))?;
    let milli: i64 = t
        .trim()
        .parse()
        .map_err(|_| Bad::Malformed(format!("t={t:?} is not an integer")))?;
    let celsius = milli as f64 / 1000.0;
    // The power-on reset value of the DS18B20's scratchpad: temperature 0x0550 = 85 °C.
    if milli == 85_000 && scratchpad.trim_start().starts_with("50 05") {
        return Err(Bad::PowerOn);
    }
    if !(-55.0..=125.0).contains(&celsius) {
        return Err(Bad::OutOfRange(celsius));
    }
    Ok(celsius)
}

/// The thermometers under a `w1` devices directory (`/sys/bus/w1/devices`), sorted by id
/// (`28-0316a2796eff`). A missing directory is an error naming it (no `w1-gpio` overlay?).
pub fn thermometers(devices: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(devices).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (is the 1-Wire bus enabled, dtoverlay=w1-gpio?)",
                devices.display()
            ),
        )
    })?;
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let family = name.split('-').next().unwrap_or("");
        if name.contains('-') && THERMOMETER_FAMILIES.contains(&family) {
            let file = devices.join(&name).join("w1_slave");
            found.push((name, file));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads one sensor's `w1_slave` (a blocking read of a few ms: the driver converts on read).
/// An I/O error (the sensor was unplugged) is `Malformed` with the error, a bad reading.
pub fn read(file: &Path) -> Result<f64, Bad> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_w1_slave(&text),
        Err(e) => Err(Bad::Malformed(format!("{}: {e}", file.display()))),
    }
}

/// One resolved `[[onewire.sensor]]`.
#[derive(Debug, Clone)]
pub struct SensorPlan {
    pub id: String,
    pub instance: String,
    /// Stored name (measurement, field).
    pub names: (String, String),
}

/// Binds every sensor to its quantity (in °C) at its instance.
pub fn resolve(
    c: &crate::config::OneWire,
    plant: &mut crate::plant::Plant,
) -> Result<Vec<SensorPlan>, crate::plant::Error> {
    let mut out = Vec::new();
    for (i, s) in c.sensors.iter().enumerate() {
        let b = plant.bind(
            &format!("onewire.sensor[{i}].quantity"),
            &s.quantity,
            crate::plant::Instance::Device(s.instance.clone()),
            format!("1-wire {}", s.id),
            "°C",
            format!("{} ms", c.interval_ms),
        )?;
        out.push(SensorPlan {
            id: s.id.clone(),
            instance: s.instance.clone(),
            names: (b.measurement.clone(), b.field.clone()),
        });
    }
    Ok(out)
}

/// Why a sensor gave no temperature this time.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Its directory is not under the devices directory (unplugged, or never there).
    Missing,
    Bad(Bad),
}

impl Failure {
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Bad(b) => b.as_str(),
        }
    }
}

/// Reads every sensor of `plans` under `dir` (blocking: the driver converts on read).
pub fn read_all(dir: &Path, plans: &[SensorPlan]) -> Vec<Result<f64, Failure>> {
    plans
        .iter()
        .map(|p| {
            let sensor = dir.join(&p.id);
            if !sensor.is_dir() {
                return Err(Failure::Missing);
            }
            read(&sensor.join("w1_slave")).map_err(Failure::Bad)
        })
        .collect()
}

/// One sensor's reading: its value, or `{field}_quality` and `Quality::Bad`.
pub fn reading_of(
    plan: &SensorPlan,
    result: &Result<f64, Failure>,
    stamp: crate::clock::Stamp,
) -> crate::model::Reading {
    use crate::model::{Quality, Reading, Series, Value};
    let (m, f) = &plan.names;
    let (quality, field) = match result {
        Ok(t) => (Quality::Good, (f.clone(), Value::Float(*t))),
        Err(e) => (
            Quality::Bad,
            (format!("{f}_quality"), Value::Str(e.as_str().into())),
        ),
    };
    Reading {
        series: Series::new(m.as_str(), plan.instance.as_str()),
        ts_ns: stamp.ts_ns,
        quality: stamp.quality(quality),
        fields: vec![field],
        ack: None,
        receipt: None,
    }
}

/// The 1-Wire task: every `interval`, all sensors read on the blocking pool, then their
/// readings offered to the intake. Ends on `cancel` (the readings in its spill are drained).
pub async fn run(
    dir: PathBuf,
    plans: Vec<SensorPlan>,
    interval: std::time::Duration,
    intake: crate::intake::Intake,
    clock: std::sync::Arc<crate::clock::Clock>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut spill = crate::intake::Spill::default();
    let mut missing = vec![false; plans.len()];
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let plans = std::sync::Arc::new(plans);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (d, p) = (dir.clone(), plans.clone());
        let results = match tokio::task::spawn_blocking(move || read_all(&d, &p)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "1-wire: the read task failed");
                continue;
            }
        };
        for (i, (plan, result)) in plans.iter().zip(&results).enumerate() {
            let now_missing = matches!(result, Err(Failure::Missing));
            if now_missing != missing[i] {
                if now_missing {
                    tracing::warn!(sensor = %plan.id, dir = %dir.display(), "1-wire: sensor missing (unplugged? its readings are bad `missing` until it is back)");
                } else {
                    tracing::info!(sensor = %plan.id, "1-wire: sensor back");
                }
                missing[i] = now_missing;
            }
            if let Err(Failure::Bad(b)) = result {
                tracing::debug!(sensor = %plan.id, error = %b, "1-wire: bad reading");
            }
            if intake
                .offer(reading_of(plan, result, clock.now()), &mut spill)
                .is_err()
            {
                return;
            }
        }
    }
    let _ = intake.drain(&mut spill).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_read_is_millidegrees_and_negative_ones_too() {
        let ok = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
        assert_eq!(parse_w1_slave(ok), Ok(23.125));
        let cold = "5e ff 4b 46 7f ff 02 10 5c : crc=5c YES\n5e ff 4b 46 7f ff 02 10 5c t=-10125\n";
        assert_eq!(parse_w1_slave(cold), Ok(-10.125));
    }

    #[test]
    fn a_crc_no_and_the_power_on_value_are_bad_readings_not_values() {
        let crc = "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
        assert_eq!(parse_w1_slave(crc), Err(Bad::Crc));
        let power_on =
            "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n";
        assert_eq!(parse_w1_slave(power_on), Err(Bad::PowerOn));
        assert_eq!(Bad::PowerOn.as_str(), "power_on_value");
        // 85 °C that the sensor did convert (a different scratchpad) is a value.
        let hot = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n51 05 4b 46 7f ff 0f 10 9a t=85062\n";
        assert_eq!(parse_w1_slave(hot), Ok(85.062));
    }

    #[test]
    fn out_of_range_and_garbled_contents_are_bad() {
        let far = "ff 07 4b 46 7f ff 01 10 cc : crc=cc YES\nff 07 4b 46 7f ff 01 10 cc t=127937\n";
        assert_eq!(parse_w1_slave(far), Err(Bad::OutOfRange(127.937)));
        assert!(matches!(parse_w1_slave(""), Err(Bad::Malformed(_))));
        assert!(matches!(
            parse_w1_slave("00 00 : crc=00 MAYBE\n00 00 t=1\n"),
            Err(Bad::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave("00 : crc=00 YES\n00 t=warm\n"),
            Err(Bad::Malformed(_))
        ));
    }

    /// Through the source's reading: good, CRC failure, 85 °C power-on and a missing sensor,
    /// each one reading; the bad ones carry `{field}_quality`, never a value.
    #[test]
    fn the_source_turns_a_sysfs_like_directory_into_good_and_bad_readings() {
        use crate::model::{Quality, Value};
        let dir = tempfile::tempdir().expect("tempdir");
        for (id, body) in [
            (
                "28-000000000001",
                "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            ),
            (
                "28-000000000002",
                "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            ),
            (
                "28-000000000003",
                "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
            ),
        ] {
            std::fs::create_dir_all(dir.path().join(id)).expect("mkdir");
            std::fs::write(dir.path().join(id).join("w1_slave"), body).expect("write");
        }
        let plans: Vec<SensorPlan> = (1..=4)
            .map(|i| SensorPlan {
                id: format!("28-00000000000{i}"),
                instance: format!("digester-{i}"),
                names: ("digester".into(), "temperature_c".into()),
            })
            .collect();
        let results = read_all(dir.path(), &plans);
        let stamp = crate::clock::Stamp::new(1_700_000_000_000_000_000, true);
        let got: Vec<(Quality, Vec<(String, Value)>)> = plans
            .iter()
            .zip(&results)
            .map(|(p, r)| {
                let r = reading_of(p, r, stamp);
                assert_eq!(&*r.series.measurement, "digester");
                (r.quality, r.fields)
            })
            .collect();
        let q = |s: &str| vec![("temperature_c_quality".to_owned(), Value::Str(s.into()))];
        assert_eq!(
            got,
            [
                (
                    Quality::Good,
                    vec![("temperature_c".to_owned(), Value::Float(23.125))]
                ),
                (Quality::Bad, q("crc_error")),
                (Quality::Bad, q("power_on_value")),
                (Quality::Bad, q("missing")),
            ]
        );
    }

    #[test]
    fn thermometers_are_found_in_a_directory_laid_out_like_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = dir.path().join("devices");
        for (name, body) in [
            (
                "28-0316a2796eff",
                "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            ),
            (
                "28-00000a1b2c3d",
                "72 01 4b 46 7f ff 0e 10 57 : crc=11 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            ),
            ("w1_bus_master1", ""),
            ("3a-0000001234ab", ""),
        ] {
            std::fs::create_dir_all(devices.join(name)).expect("mkdir");
            std::fs::write(devices.join(name).join("w1_slave"), body).expect("write");
        }
        let found = thermometers(&devices).expect("list");
        let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["28-00000a1b2c3d", "28-0316a2796eff"],
            "the bus master and a switch (3a) are not thermometers"
        );
        assert_eq!(read(&found[1].1), Ok(23.125));
        assert_eq!(read(&found[0].1), Err(Bad::Crc));
        // Unplugged: the file is gone.
        std::fs::remove_dir_all(devices.join("28-0316a2796eff")).expect("rm");
        assert!(matches!(read(&found[1].1), Err(Bad::Malformed(_))));
        let err = thermometers(&dir.path().join("nope")).expect_err("missing");
        assert!(err.to_string().contains("w1-gpio"), "{err}");
    }
}
