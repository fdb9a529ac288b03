//! 1-Wire temperature sensors (DS18B20 and its family) through the Linux `w1` sysfs files
//! (issue 11, in progress: the reading and checking of the files is built and tested; the
//! source task, its config and its quantity bindings are not wired yet).
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
