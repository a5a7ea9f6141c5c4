//! Geography that fits its columns.
//!
//! The platform's tables keep names in `VARCHAR(50)` (country, province, city, continent, asn)
//! and `VARCHAR(255)` (isp), counted in characters on PostgreSQL and on MySQL/MariaDB with
//! `utf8mb4`. Geodata does not know that: DB-IP has city names of 59 characters ("Norfolk (Joint
//! Expeditionary Base Little Creek-Fort Story)"). A value the database refuses would cost its
//! record (and, before this module, made every batch with one go through the slow isolation
//! path), so every backend cuts names to their column's width, on a character boundary, before
//! they reach SQL. SQLite does not enforce the width; it gets the same cut so that every backend
//! holds the same rows.

use std::borrow::Cow;

use arcstr::ArcStr;

use super::EnrichedBatch;
use crate::enrich::Geo;

/// Width in characters of `country`, `province`, `city`, `continent` and `asn`.
pub const NAME_WIDTH: usize = 50;
/// Width in characters of `isp`.
pub const ISP_WIDTH: usize = 255;

/// `value` cut to at most `width` characters; `None` when it already fits.
fn cut(value: &str, width: usize) -> Option<ArcStr> {
    // A string of at most `width` bytes has at most `width` characters: the common case costs
    // one comparison.
    if value.len() <= width {
        return None;
    }
    let end = value.char_indices().nth(width).map(|(i, _)| i)?;
    Some(ArcStr::from(&value[..end]))
}

/// Whether every name of `geo` fits its column.
fn fits(geo: &Geo) -> bool {
    let ok = |v: &Option<ArcStr>, w: usize| v.as_deref().is_none_or(|s| cut(s, w).is_none());
    ok(&geo.country, NAME_WIDTH)
        && ok(&geo.province, NAME_WIDTH)
        && ok(&geo.city, NAME_WIDTH)
        && ok(&geo.continent, NAME_WIDTH)
        && ok(&geo.asn, NAME_WIDTH)
        && ok(&geo.isp, ISP_WIDTH)
}

/// Cuts every name of `geo` to its column's width.
pub fn fit(geo: &mut Geo) {
    for (field, width) in [
        (&mut geo.country, NAME_WIDTH),
        (&mut geo.province, NAME_WIDTH),
        (&mut geo.city, NAME_WIDTH),
        (&mut geo.continent, NAME_WIDTH),
        (&mut geo.asn, NAME_WIDTH),
        (&mut geo.isp, ISP_WIDTH),
    ] {
        if let Some(short) = field.as_deref().and_then(|v| cut(v, width)) {
            *field = Some(short);
        }
    }
}

/// `batch` with every geo value cut to its column; borrowed when everything fits already.
pub fn fit_batch(batch: &EnrichedBatch) -> Cow<'_, EnrichedBatch> {
    if batch.geo.iter().all(fits) {
        return Cow::Borrowed(batch);
    }
    let mut owned = batch.clone();
    owned.geo.iter_mut().for_each(fit);
    Cow::Owned(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_on_character_boundaries() {
        let city = "Norfolk (Joint Expeditionary Base Little Creek-Fort Story)";
        let mut g = Geo {
            city: Some(city.into()),
            province: Some("内蒙古自治区".repeat(20).as_str().into()),
            isp: Some("x".repeat(300).as_str().into()),
            country: Some("中国".into()),
            ..Geo::default()
        };
        assert!(!fits(&g));
        fit(&mut g);
        assert!(fits(&g));
        assert_eq!(g.city.as_deref().map(|s| s.chars().count()), Some(50));
        assert!(city.starts_with(g.city.as_deref().unwrap_or_default()));
        assert_eq!(g.province.as_deref().map(|s| s.chars().count()), Some(50));
        assert_eq!(g.isp.as_deref().map(str::len), Some(255));
        assert_eq!(g.country.as_deref(), Some("中国"));
    }

    #[test]
    fn fitting_values_are_left_alone() {
        // 50 three-byte characters: 150 bytes, still 50 characters.
        let name = "广".repeat(50);
        assert!(cut(&name, NAME_WIDTH).is_none());
        assert!(cut(&"广".repeat(51), NAME_WIDTH).is_some());
    }
}
