//! Which texts are plates: the layouts of the countries a camera reads (a table in
//! `layouts.txt`, chosen by `plates.region` and `plates.countries`, plus a site's
//! own), and how a recognised line is decoded against them ([`super::decode`]).
//!
//! A layout is a string of `L` (letter), `N` (digit), `X` (either), letters and
//! digits standing for themselves, `{a,b}` repeats and `(AB|CD)` lists (see
//! [`super::decode::expand`]).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::decode::{self, Lattice, Pattern};

/// A region's plates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// Brazil: `LLLNNNN` and Mercosur `LLLNLNN`.
    Br,
    /// Europe: the European countries of the table; reads need a letter and a digit.
    Eu,
    /// United States: the states of the table; `O` is read as `0`.
    Us,
    /// No table: anything of 4-8 letters and digits with at least one digit.
    Any,
}

impl Region {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "br" => Some(Region::Br),
            "eu" => Some(Region::Eu),
            "us" => Some(Region::Us),
            "any" => Some(Region::Any),
            _ => None,
        }
    }

    fn lengths(self) -> (usize, usize) {
        match self {
            Region::Br => (7, 7),
            Region::Us => (5, 8),
            Region::Eu | Region::Any => (4, 8),
        }
    }

    /// How the decoder weighs readings in this region (see [`Params`]); chosen by
    /// five-fold cross-validation on the development set (docs/plates.md).
    pub fn params(self) -> Params {
        let twins = match self {
            // O is read as 0 in the US; Brazil's layouts never put them in doubt.
            Region::Br | Region::Us => 0.0,
            Region::Eu | Region::Any => 0.1,
        };
        // Only Europe reads letters alone (see `Params::words`).
        let words = if self == Region::Eu { 0.1 } else { 0.0 };
        Params {
            unlisted: 0.03,
            extra: 0.01,
            twins,
            width: 16,
            plate: 1.0,
            words,
        }
    }
}

/// Upper case, letters and digits only (how reads are compared).
pub fn normalize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// One country of the layout table.
#[derive(Debug, Clone, PartialEq)]
pub struct Country {
    pub region: Region,
    pub code: &'static str,
    pub name: &'static str,
    pub layouts: Vec<&'static str>,
}

const TABLE: &str = include_str!("layouts.txt");

/// The table's country with this code (any case).
pub fn country(code: &str) -> Option<&'static Country> {
    countries()
        .iter()
        .find(|c| c.code.eq_ignore_ascii_case(code))
}

/// The layout table (`layouts.txt`, checked by a unit test).
pub fn countries() -> &'static [Country] {
    static TABLE_PARSED: OnceLock<Vec<Country>> = OnceLock::new();
    TABLE_PARSED.get_or_init(|| parse_table(TABLE).expect("layouts.txt is valid (unit-tested)"))
}

fn parse_table(text: &'static str) -> Result<Vec<Country>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let (fields, name) = line.split_once('#').unwrap_or((line, ""));
        let mut f = fields.split_whitespace();
        let Some(region) = f.next() else { continue };
        let region = Region::parse(region)
            .filter(|r| *r != Region::Any)
            .ok_or_else(|| format!("layouts.txt line {}: region {region:?}", n + 1))?;
        let code = f
            .next()
            .ok_or_else(|| format!("layouts.txt line {}: no country code", n + 1))?;
        let layouts: Vec<&str> = f.collect();
        for l in &layouts {
            decode::expand(l).map_err(|e| format!("layouts.txt line {}: {e}", n + 1))?;
        }
        if layouts.is_empty() {
            return Err(format!("layouts.txt line {}: no layout", n + 1));
        }
        out.push(Country {
            region,
            code,
            name: name.trim(),
            layouts,
        });
    }
    Ok(out)
}

/// How readings are weighed against each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// A reading that fits no layout (a personalised plate, a country missing from
    /// the table) weighs this much of one that fits.
    pub unlisted: f32,
    /// Each character read along before or after a layout (a country band, a
    /// bolt) weighs the reading down by this factor.
    pub extra: f32,
    /// `O` and `0`, `I` and `1` look alike on many plates: where a layout decides,
    /// each is taken to be at least this share as likely as its twin.
    pub twins: f32,
    /// Texts the beam search keeps at each step.
    pub width: usize,
    /// With both recognisers, edgecam's plate recogniser's readings count this
    /// much of PP-OCR's.
    pub plate: f32,
    /// In Europe, a line of letters only that fits no layout (a personalised
    /// plate such as a name) weighs this much of one that mixes letters and
    /// digits; 0: such a line is a word, never a plate. (In the US a line
    /// without a digit is always a word: a state, a slogan, a dealer.)
    pub words: f32,
}

/// Characters that look alike on plates (see [`Params::twins`]).
const TWINS: [(char, char); 2] = [('O', '0'), ('I', '1')];

/// At most this many characters are read along before, and after, a layout.
const MAX_EXTRA: usize = 2;

/// A camera's clock overlay as read, before normalising: a time (`10:19:20`) or a
/// date (`2014-06-18`, `18/06/2014`) — digit groups joined by `:`, or by `-`, `/`
/// or `.` with a group of four digits.
fn looks_like_clock(raw: &str) -> bool {
    let groups: Vec<&str> = raw
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let digits_only = raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ':' | '-' | '/' | '.' | ' '));
    let time = raw.contains(':') && groups.len() >= 2 && groups.iter().all(|g| g.len() <= 2);
    let date = digits_only
        && groups.len() >= 3
        && groups.iter().any(|g| g.len() == 4)
        && raw.chars().any(|c| matches!(c, '-' | '/' | '.'));
    digits_only && (time || date)
}

/// `YYYYMMDD…` of a camera's timestamp overlay, read as one word.
fn looks_like_date(t: &[char]) -> bool {
    let s: String = t.iter().collect();
    s.len() >= 6
        && (s.starts_with("19") || s.starts_with("20"))
        && s.chars().all(|c| c.is_ascii_digit())
        && s[4..6].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
}

/// Whether `layout` is a plate layout (see [`decode::expand`]).
pub fn valid_layout(layout: &str) -> bool {
    decode::expand(layout).is_ok()
}

/// The layouts a camera reads and how readings are weighed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub region: Region,
    patterns: Vec<Pattern>,
    /// The shortest and longest plate (the region's, widened by the site's layouts).
    lengths: (usize, usize),
    pub params: Params,
}

impl Rules {
    /// The layouts of `countries` (codes of the table; empty: all of `region`'s)
    /// plus the site's own `layouts`. Errors name the bad entry.
    pub fn new(region: Region, countries: &[String], layouts: &[String]) -> Result<Self, String> {
        let table = self::countries();
        let mut written: Vec<&str> = Vec::new();
        if countries.is_empty() {
            for c in table.iter().filter(|c| c.region == region) {
                written.extend(&c.layouts);
            }
        }
        for (i, code) in countries.iter().enumerate() {
            let c = country(code).ok_or_else(|| {
                    format!(
                        "countries[{i}]: no country {code:?} in the layout table (codes like DE, BR, US-CA; `edgecam plate-layouts` lists them)"
                    )
                })?;
            written.extend(&c.layouts);
        }
        let (mut min, mut max) = region.lengths();
        let mut patterns: Vec<Pattern> = Vec::new();
        for l in written {
            patterns.extend(decode::expand(l)?);
        }
        for (i, l) in layouts.iter().enumerate() {
            let expanded = decode::expand(l).map_err(|e| format!("layouts[{i}]: {e}"))?;
            for p in &expanded {
                (min, max) = (min.min(p.len()), max.max(p.len()));
            }
            patterns.extend(expanded);
        }
        patterns.sort();
        patterns.dedup();
        Ok(Self {
            region,
            patterns,
            lengths: (min, max),
            params: region.params(),
        })
    }

    /// How many distinct patterns the layouts stand for.
    pub fn patterns(&self) -> usize {
        self.patterns.len()
    }

    /// The plate readings of a recognised line (`raw` as read, `lattice` the
    /// recogniser's probabilities): texts that fit a layout, found by the
    /// constrained beam search, and the likeliest texts as read, judged generically
    /// and weighed by [`Params::unlisted`]. One reading per plate text, best first.
    pub fn readings(&self, raw: &str, lattice: &Lattice) -> Vec<Reading> {
        let as_read: Vec<char> = normalize(raw).chars().collect();
        if looks_like_clock(raw.trim()) || looks_like_date(&as_read) || lattice.is_empty() {
            return Vec::new();
        }
        // In the US a line read without a digit is a word (a state, a slogan, a
        // dealer), whatever its O's would become.
        if self.region == Region::Us && !as_read.iter().any(char::is_ascii_digit) {
            return Vec::new();
        }
        // The layouts decide between look-alikes; read as is, the recogniser does.
        let mut folded = lattice.clone();
        if self.region == Region::Us {
            // Most US states issue no letter O, and those that do print it like the
            // digit: ALPR systems there read both as 0.
            folded.fold('O', '0');
        }
        let mut constrained = folded.clone();
        for (a, b) in TWINS {
            constrained.twin(a, b, self.params.twins);
        }
        let p = self.params;
        let mut out: Vec<Reading> = Vec::new();
        let mut consider = |r: Reading| match out.iter_mut().find(|o| o.text == r.text) {
            Some(o) if o.score < r.score => *o = r,
            Some(_) => {}
            None => out.push(r),
        };
        let per_char = |prob: f64, n: usize| (prob.powf(1.0 / n.max(1) as f64)) as f32;
        if !self.patterns.is_empty() {
            for h in decode::search(&constrained, p.width, Some(&self.patterns), MAX_EXTRA) {
                let fit = h.fits[0];
                let text = &h.text[fit.start..fit.end];
                let chars: Vec<char> = text.chars().collect();
                if looks_like_date(&chars) {
                    continue;
                }
                let extra = h.text.len() - text.len();
                // How sure the recogniser itself was of it, look-alikes not shared.
                let own = decode::probability(&folded, &h.text);
                consider(Reading {
                    text: text.to_owned(),
                    score: (h.p as f32) * p.extra.powi(extra as i32),
                    confidence: per_char(own, h.text.len()),
                });
            }
        }
        for h in decode::search(lattice, p.width, None, 0) {
            // A word is no plate: the digit must be read, not folded in.
            let Some(w) = self.generic(&h.text.chars().collect::<Vec<_>>()) else {
                continue;
            };
            let text = if self.region == Region::Us {
                h.text.replace('O', "0")
            } else {
                h.text.clone()
            };
            let t: Vec<char> = text.chars().collect();
            let unlisted = if self.patterns.is_empty() {
                1.0
            } else {
                p.unlisted
            };
            consider(Reading {
                text,
                score: (h.p as f32) * w * unlisted,
                confidence: per_char(h.p, t.len()) * w,
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out
    }

    /// The weight of a text judged without layouts, `None` when it cannot be a
    /// plate: of the region's lengths, with a digit (and a letter in Europe), not a
    /// date; in Europe letters alone weigh [`Params::words`]. Plates mix letters
    /// and digits far more often than not.
    fn generic(&self, t: &[char]) -> Option<f32> {
        let (min, max) = self.lengths;
        let digits = t.iter().filter(|c| c.is_ascii_digit()).count();
        let letters = t.len() - digits;
        if !(min..=max).contains(&t.len()) || looks_like_date(t) {
            return None;
        }
        match (letters > 0, digits > 0) {
            (true, true) => Some(0.6),
            (false, true) if self.region != Region::Eu => Some(0.4),
            (true, false) if self.region == Region::Eu && self.params.words > 0.0 => {
                Some(0.6 * self.params.words)
            }
            _ => None,
        }
    }
}

/// A plate reading of one recognised line.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub text: String,
    /// The recogniser's probability for the text (summed over the ways its steps
    /// spell it) times the weight of how it fits the layouts: what crops vote with.
    pub score: f32,
    /// The probability per character (the geometric mean), times 0.6 (0.4 for
    /// digits only) for a reading that fits no layout.
    pub confidence: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::plates::decode::{lattice, sure};

    fn rules(region: Region, layouts: &[&str]) -> Rules {
        let layouts: Vec<String> = layouts.iter().map(|s| s.to_string()).collect();
        Rules::new(region, &[], &layouts).unwrap()
    }

    /// The best reading, the line as read being the likeliest text.
    fn best(rules: &Rules, lat: &Lattice) -> Option<String> {
        let raw = decode::search(lat, 1, None, 0).remove(0).text;
        rules.readings(&raw, lat).first().map(|r| r.text.clone())
    }

    #[test]
    fn the_layout_table_parses_and_every_region_has_countries() {
        let table = countries();
        for region in [Region::Br, Region::Eu, Region::Us] {
            assert!(table.iter().any(|c| c.region == region), "{region:?}");
        }
        let mut codes: Vec<&str> = table.iter().map(|c| c.code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), table.len(), "codes are unique");
        assert!(table.iter().all(|c| !c.name.is_empty()));
        assert!(parse_table("eu XX LL-NN # bad").is_err());
        assert!(parse_table("xx XX LLNN # region").is_err());
    }

    #[test]
    fn an_unknown_country_or_a_bad_layout_is_refused_by_its_place() {
        let e = Rules::new(Region::Eu, &["DE".into(), "XQ".into()], &[]).unwrap_err();
        assert!(e.starts_with("countries[1]: no country \"XQ\""), "{e}");
        let e = Rules::new(Region::Us, &[], &["LLNLNL".into(), "LN-L".into()]).unwrap_err();
        assert!(e.starts_with("layouts[1]: layout \"LN-L\""), "{e}");
        // Codes in any case; countries narrow the region's table.
        let de = Rules::new(Region::Eu, &["de".into()], &[]).unwrap();
        assert!(de.patterns() < rules(Region::Eu, &[]).patterns());
    }

    #[test]
    fn brazilian_layouts_take_the_recognisers_letter_where_a_letter_must_be() {
        let br = rules(Region::Br, &[]);
        assert_eq!(best(&br, &sure("ABC1234")).as_deref(), Some("ABC1234"));
        // 8 read where a letter must be, B nearly as likely; O read for 0.
        let lat = lattice(&[
            ('A', 0.97, &[]),
            ('8', 0.6, &[('B', 0.35)]),
            ('C', 0.97, &[]),
            ('1', 0.97, &[]),
            ('2', 0.97, &[]),
            ('O', 0.7, &[('0', 0.25)]),
            ('4', 0.97, &[]),
        ]);
        assert_eq!(best(&br, &lat).as_deref(), Some("ABC1204"));
        // The country band read along before the plate (weighed as one sure
        // character left out would be: these test steps hold a character once).
        let mut band = br.clone();
        band.params.extra = 0.3;
        assert_eq!(best(&band, &sure("BRABC1234")).as_deref(), Some("ABC1234"));
        assert_eq!(best(&br, &sure("BRASIL")), None);
    }

    #[test]
    fn a_site_layout_takes_the_likely_alternative_and_never_forces_an_unlikely_one() {
        // Missouri LLNLNL: MHG V4L with the G nearly as likely a 6.
        let lat = lattice(&[
            ('M', 0.97, &[]),
            ('H', 0.97, &[]),
            ('G', 0.7, &[('6', 0.25)]),
            ('V', 0.97, &[]),
            ('4', 0.97, &[]),
            ('L', 0.97, &[]),
        ]);
        assert_eq!(
            best(&rules(Region::Any, &[]), &lat).as_deref(),
            Some("MHGV4L")
        );
        let missouri = rules(Region::Any, &["LLNLNL"]);
        assert_eq!(best(&missouri, &lat).as_deref(), Some("MH6V4L"));
        // With no probability for a 6 the read stands, weighed down as unlisted.
        let r = missouri.readings("", &sure("YDGL3C"));
        assert_eq!(r[0].text, "YDGL3C");
        assert!(r[0].confidence < 0.9, "{r:?}");
    }

    #[test]
    fn a_personalised_plate_is_read_when_nothing_that_fits_is_nearly_as_likely() {
        let us = rules(Region::Us, &[]);
        assert_eq!(
            best(&us, &sure("4GOLF7")).as_deref(),
            Some("4G0LF7"),
            "O is 0"
        );
        assert_eq!(best(&us, &sure("7ABC123")).as_deref(), Some("7ABC123"));
    }

    #[test]
    fn in_europe_a_line_of_letters_alone_is_a_personalised_plate_weighed_far_down() {
        let eu = rules(Region::Eu, &[]);
        let r = eu.readings("GWAGEN", &sure("GWAGEN"));
        assert_eq!(r[0].text, "GWAGEN");
        assert!(r[0].confidence < 0.1, "below plates.min_confidence: {r:?}");
        let mut no_words = eu.clone();
        no_words.params.words = 0.0;
        assert!(no_words.readings("GWAGEN", &sure("GWAGEN")).is_empty());
        // A digit the recogniser barely saw (the emblem between district and
        // name) does not turn the name into a plate of letters and digits.
        let lat = lattice(&[
            ('K', 0.97, &[]),
            ('M', 0.97, &[]),
            ('B', 0.97, &[('9', 0.01)]),
            ('O', 0.97, &[]),
            ('R', 0.97, &[]),
            ('A', 0.97, &[]),
            ('K', 0.97, &[]),
        ]);
        assert_eq!(best(&eu, &lat).as_deref(), Some("KMBORAK"));
        assert_ne!(best(&no_words, &lat).as_deref(), Some("KMBORAK"));
        // Where the plate fits a layout, a word in the picture ranks far below it.
        let plate = eu.readings("RK755AJ", &sure("RK755AJ"))[0].score;
        assert!(r[0].score < plate / 100.0, "{} against {plate}", r[0].score);
        // Not in the US or Brazil, where lines of letters are state names and words.
        for region in [Region::Us, Region::Br] {
            assert!(rules(region, &[])
                .readings("GWAGEN", &sure("GWAGEN"))
                .is_empty());
        }
    }

    #[test]
    fn a_clock_overlay_words_and_short_texts_are_not_plates() {
        let us = rules(Region::Us, &[]);
        assert!(us
            .readings("2014-05-12 08:34:10", &sure("20140512083410"))
            .is_empty());
        assert!(us.readings("", &Lattice::default()).is_empty());
        assert_eq!(best(&us, &sure("STOP")), None);
        // VERROO would fit Florida's LLLLNN once its O's are 0's.
        assert!(us.readings("VERROO", &sure("VERROO")).is_empty());
        assert_eq!(best(&rules(Region::Any, &[]), &sure("12")), None);
        assert!(
            us.readings("20140428", &sure("20140428")).is_empty(),
            "a date overlay"
        );
        // In Europe a plate has a letter: at most a look-alike reading, unsure.
        let eu = rules(Region::Eu, &[]);
        assert!(eu
            .readings("12345", &sure("12345"))
            .iter()
            .all(|r| r.confidence < 0.2));
    }

    #[test]
    fn european_layouts_fix_confusions_by_position() {
        let eu = rules(Region::Eu, &[]);
        // Czechia NLNNNNN: the first read as I, 1 nearly as likely.
        let lat = lattice(&[
            ('I', 0.6, &[('1', 0.35)]),
            ('T', 0.97, &[]),
            ('4', 0.97, &[]),
            ('3', 0.97, &[]),
            ('2', 0.97, &[]),
            ('1', 0.97, &[]),
            ('3', 0.97, &[]),
        ]);
        // All of Europe: IT43213 fits Denmark's LLNNNNN, and the recogniser said I.
        assert_eq!(best(&eu, &lat).as_deref(), Some("IT43213"));
        let cz = Rules::new(Region::Eu, &["CZ".into()], &[]).unwrap();
        assert_eq!(best(&cz, &lat).as_deref(), Some("1T43213"));
        // Poland LLNNNNN: a G read where a digit must be.
        let lat = lattice(&[
            ('W', 0.97, &[]),
            ('A', 0.97, &[]),
            ('5', 0.97, &[]),
            ('6', 0.97, &[]),
            ('G', 0.6, &[('6', 0.35)]),
            ('6', 0.97, &[]),
            ('0', 0.97, &[]),
        ]);
        assert_eq!(best(&eu, &lat).as_deref(), Some("WA56660"));
        assert_eq!(best(&eu, &sure("AB12CDE")).as_deref(), Some("AB12CDE"));
        // Slovakia LLNNNLL: O and 0 look alike, the layout tells them apart.
        let mut sk = Rules::new(Region::Eu, &["SK".into()], &[]).unwrap();
        sk.params.twins = 0.0;
        assert_eq!(best(&sk, &sure("RK340A0")).as_deref(), Some("RK340A0"));
        sk.params.twins = 0.3;
        assert_eq!(best(&sk, &sure("RK340A0")).as_deref(), Some("RK340AO"));
    }

    #[test]
    fn a_city_code_list_keeps_another_countrys_plate_from_fitting_croatias() {
        // Slovakia LLNNNLL read with its I as a 1, the I nearly as likely: BA2681M
        // has Croatia's shape LLNNNNL, but BA is no Croatian city. (With all of
        // Europe it stays BA2681M: an old Spanish plate from Badajoz.)
        let lat = lattice(&[
            ('B', 0.97, &[]),
            ('A', 0.97, &[]),
            ('2', 0.97, &[]),
            ('6', 0.97, &[]),
            ('8', 0.97, &[]),
            ('1', 0.6, &[('I', 0.35)]),
            ('M', 0.97, &[]),
        ]);
        let eu = Rules::new(Region::Eu, &["SK".into(), "HR".into()], &[]).unwrap();
        assert_eq!(best(&eu, &lat).as_deref(), Some("BA268IM"));
        // The same read from Zagreb is a Croatian plate as read.
        let zg = lattice(&[
            ('Z', 0.97, &[]),
            ('G', 0.97, &[]),
            ('2', 0.97, &[]),
            ('6', 0.97, &[]),
            ('8', 0.97, &[]),
            ('1', 0.6, &[('I', 0.35)]),
            ('M', 0.97, &[]),
        ]);
        assert_eq!(best(&eu, &zg).as_deref(), Some("ZG2681M"));
        // The shape alone, as the table had it, took the 1.
        let shape = Rules::new(Region::Any, &[], &["LLNNNLL".into(), "LLNNNNL".into()]).unwrap();
        assert_eq!(best(&shape, &lat).as_deref(), Some("BA2681M"));
    }
}
