//! Coordinate systems: WGS-84 inside the gateway, GCJ-02 and BD-09 at the edges.
//!
//! Chinese maps publish points in GCJ-02 (国测局, an obfuscated WGS-84) or BD-09 (百度, a further
//! shift of GCJ-02). The forward transforms are the published ones; there is no closed-form
//! inverse, so the inverse is solved by fixed-point iteration until the forward image of the
//! guess is within [`INVERSE_TOLERANCE`] of the native point — never the one-step
//! approximation, which is off by metres. Outside China's rough box no shift applies.

use std::f64::consts::PI;

/// The coordinate systems a native document may use. CGCS2000 is taken as WGS-84.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordSystem {
    Wgs84,
    Gcj02,
    Bd09,
}

/// How close (degrees) the inverse must bring the forward image to the native point.
pub const INVERSE_TOLERANCE: f64 = 1e-9;
const MAX_ITERATIONS: usize = 100;

const KRASOVSKY_A: f64 = 6_378_245.0;
const KRASOVSKY_EE: f64 = 0.006_693_421_622_965_943;
const X_PI: f64 = PI * 3000.0 / 180.0;

/// Whether a point lies in the box where GCJ-02 shifts apply (`canonical.md`).
pub fn in_china(lon: f64, lat: f64) -> bool {
    (72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat)
}

/// WGS-84 → GCJ-02.
pub fn wgs84_to_gcj02(lon: f64, lat: f64) -> (f64, f64) {
    if !in_china(lon, lat) {
        return (lon, lat);
    }
    let dlat = transform_lat(lon - 105.0, lat - 35.0);
    let dlon = transform_lon(lon - 105.0, lat - 35.0);
    let rad_lat = lat / 180.0 * PI;
    let magic = 1.0 - KRASOVSKY_EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    let dlat = (dlat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * PI);
    let dlon = (dlon * 180.0) / (KRASOVSKY_A / sqrt_magic * rad_lat.cos() * PI);
    (lon + dlon, lat + dlat)
}

/// GCJ-02 → BD-09.
pub fn gcj02_to_bd09(lon: f64, lat: f64) -> (f64, f64) {
    if !in_china(lon, lat) {
        return (lon, lat);
    }
    let z = (lon * lon + lat * lat).sqrt() + 0.00002 * (lat * X_PI).sin();
    let theta = lat.atan2(lon) + 0.000003 * (lon * X_PI).cos();
    (z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// WGS-84 → the given system.
pub fn from_wgs84(system: CoordSystem, lon: f64, lat: f64) -> (f64, f64) {
    match system {
        CoordSystem::Wgs84 => (lon, lat),
        CoordSystem::Gcj02 => wgs84_to_gcj02(lon, lat),
        CoordSystem::Bd09 => {
            let (glon, glat) = wgs84_to_gcj02(lon, lat);
            gcj02_to_bd09(glon, glat)
        }
    }
}

/// The given system → WGS-84, by iterating the forward transform.
pub fn to_wgs84(system: CoordSystem, lon: f64, lat: f64) -> (f64, f64) {
    if system == CoordSystem::Wgs84 || !in_china(lon, lat) {
        return (lon, lat);
    }
    let (mut guess_lon, mut guess_lat) = (lon, lat);
    for _ in 0..MAX_ITERATIONS {
        let (flon, flat) = from_wgs84(system, guess_lon, guess_lat);
        let (elon, elat) = (flon - lon, flat - lat);
        if elon.abs() < INVERSE_TOLERANCE && elat.abs() < INVERSE_TOLERANCE {
            break;
        }
        guess_lon -= elon;
        guess_lat -= elat;
    }
    (guess_lon, guess_lat)
}

/// Rounds degrees to the six decimals the canonical model keeps.
pub fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn transform_lat(x: f64, y: f64) -> f64 {
    let mut ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    ret += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    ret += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    ret += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    ret
}

fn transform_lon(x: f64, y: f64) -> f64 {
    let mut ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    ret += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    ret += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    ret += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ningbo_sample_inverse_gives_the_canonical_example_point() {
        let (lon, lat) = to_wgs84(CoordSystem::Gcj02, 121.548164, 29.865766);
        assert!((round6(lat) - 29.868336).abs() < 2e-6, "{lat}");
        assert!((round6(lon) - 121.543990).abs() < 2e-6, "{lon}");
    }

    #[test]
    fn outside_china_is_not_shifted() {
        assert_eq!(from_wgs84(CoordSystem::Bd09, 2.35, 48.85), (2.35, 48.85));
        assert_eq!(to_wgs84(CoordSystem::Gcj02, 151.2, -33.8), (151.2, -33.8));
    }

    #[test]
    fn inverse_of_forward_is_identity_within_tolerance() {
        for system in [CoordSystem::Gcj02, CoordSystem::Bd09] {
            let mut lon = 73.0;
            while lon < 135.0 {
                let mut lat = 3.0;
                while lat < 53.0 {
                    let (flon, flat) = from_wgs84(system, lon, lat);
                    let (ilon, ilat) = to_wgs84(system, flon, flat);
                    assert!(
                        (ilon - lon).abs() < 1e-6 && (ilat - lat).abs() < 1e-6,
                        "{system:?} {lon} {lat}"
                    );
                    lat += 1.7;
                }
                lon += 2.3;
            }
        }
    }
}
