//! Plate-format rules per region: which texts can be plates, and the
//! character-confusion fixes a format implies (an `O` where the format wants a
//! digit is a `0`).
//!
//! A pattern is a string of `L` (letter), `N` (digit) and `X` (either).

use serde::{Deserialize, Serialize};

use super::ocr::Glyph;

/// A region's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// Brazil: `LLLNNNN` and Mercosur `LLLNLNN`.
    Br,
    /// Europe, mixed countries: 4-8 letters and digits with at least one of each.
    Eu,
    /// United States: 5-8 letters and digits with at least one digit, no fixes.
    Us,
    /// Anything of 4-8 letters and digits with at least one digit.
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

    fn patterns(self) -> &'static [&'static str] {
        match self {
            Region::Br => &["LLLNNNN", "LLLNLNN"],
            // Layouts vary by state and vanity plates are common: a guessed layout
            // "fixes" more right characters than wrong ones (measured on the
            // development set), so US reads are judged generically.
            Region::Us => &[],
            Region::Eu => &["LLNNLLL", "LLNNNLL", "LLLNNNN", "NLLLNNN", "LLNNNNN"],
            Region::Any => &[],
        }
    }

    fn lengths(self) -> (usize, usize) {
        match self {
            Region::Br => (7, 7),
            Region::Us => (5, 8),
            Region::Eu | Region::Any => (4, 8),
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

fn as_letter(c: char) -> Option<char> {
    Some(match c {
        'A'..='Z' => c,
        '0' => 'O',
        '1' => 'I',
        '2' => 'Z',
        '4' => 'A',
        '5' => 'S',
        '6' => 'G',
        '7' => 'T',
        '8' => 'B',
        _ => return None,
    })
}

fn as_digit(c: char) -> Option<char> {
    Some(match c {
        '0'..='9' => c,
        'O' | 'D' | 'Q' | 'U' => '0',
        'I' | 'L' | 'J' => '1',
        'Z' => '2',
        'A' => '4',
        'S' => '5',
        'G' => '6',
        'T' => '7',
        'B' => '8',
        _ => return None,
    })
}

/// `text` forced into `pattern`, and how many characters that changed.
fn fit(text: &[char], pattern: &str) -> Option<(String, usize)> {
    if text.len() != pattern.len() {
        return None;
    }
    let mut out = String::new();
    let mut fixes = 0;
    for (&c, p) in text.iter().zip(pattern.chars()) {
        let f = match p {
            'L' => as_letter(c)?,
            'N' => as_digit(c)?,
            _ => c,
        };
        fixes += (f != c) as usize;
        out.push(f);
    }
    Some((out, fixes))
}

/// With layouts configured, a read that fits none weighs this much less.
const LAYOUT_PRIOR: f32 = 0.1;

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

/// Whether `layout` is a plate layout: 4 to 10 of `L` (letter), `N` (digit) and `X`
/// (either).
pub fn valid_layout(layout: &str) -> bool {
    (4..=10).contains(&layout.len()) && layout.chars().all(|c| matches!(c, 'L' | 'N' | 'X'))
}

/// A region's formats, and layouts added by configuration (a site's local plates:
/// a read must fit one exactly — the recogniser's alternatives in
/// [`Rules::readings`] supply the fixes — and is preferred over one that fits none).
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub region: Region,
    layouts: Vec<String>,
}

impl Rules {
    /// The region's rules plus `layouts` (checked with [`valid_layout`]).
    pub fn new(region: Region, layouts: &[String]) -> Result<Self, String> {
        if let Some(bad) = layouts.iter().find(|l| !valid_layout(l)) {
            return Err(format!(
                "plate layout {bad:?}: expected 4 to 10 of L (letter), N (digit), X (either)"
            ));
        }
        Ok(Self {
            region,
            layouts: layouts.to_vec(),
        })
    }

    /// The best plate reading of a recognised text, with a weight in (0, 1] for
    /// how well it fits the formats; `None` when it cannot be a plate.
    #[cfg(test)]
    fn plate(&self, text: &str) -> Option<(String, f32)> {
        read_plate(text, self.region, &self.layouts)
    }
}

/// A plate reading of one recognised line.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub text: String,
    /// The probability of the recogniser's path for it (the product over its
    /// characters, and over those it leaves out of the probability of none) times
    /// its fit to the formats: what crops vote with.
    pub score: f32,
    /// The geometric mean of its own characters' probabilities times its fit.
    pub confidence: f32,
}

/// At most this many characters changed from the recogniser's best path.
const MAX_CHANGES: usize = 2;
/// An alternative for a character less likely than this is not tried.
const MIN_ALT: f32 = 0.02;
/// Lines longer than this are words, not plates: only their best path is judged.
const MAX_GLYPHS: usize = 12;

impl Rules {
    /// The plate readings of a recognised line (`raw` as read, `glyphs` its letters
    /// and digits with their alternatives): the recogniser's best path, and the
    /// paths one or two likely confusions away — a character read as the likeliest
    /// letter or digit in its place, or left out where no character was nearly as
    /// likely — each judged by the formats. One reading per plate text, best first.
    pub fn readings(&self, raw: &str, glyphs: &[Glyph]) -> Vec<Reading> {
        if looks_like_clock(raw.trim()) || glyphs.is_empty() {
            return Vec::new();
        }
        // Per character: (what it becomes, or none; its probability).
        let options: Vec<Vec<(Option<char>, f32)>> = glyphs
            .iter()
            .map(|g| {
                let mut o = vec![(Some(g.ch), g.p)];
                if glyphs.len() <= MAX_GLYPHS {
                    let alt = if g.ch.is_ascii_digit() {
                        g.letter
                    } else {
                        g.digit
                    };
                    if alt.1 >= MIN_ALT && alt.0 != g.ch {
                        o.push((Some(alt.0), alt.1));
                    }
                    if g.blank >= MIN_ALT {
                        o.push((None, g.blank));
                    }
                }
                o
            })
            .collect();
        let mut out: Vec<Reading> = Vec::new();
        let mut path = Vec::with_capacity(glyphs.len());
        paths(&options, 0, MAX_CHANGES, &mut path, &mut |chosen| {
            let text: String = chosen.iter().filter_map(|(c, _)| *c).collect();
            // The path's probability: dropped characters count in it (as the
            // probability of no character), not in the confidence.
            let product: f32 = chosen.iter().map(|(_, p)| p.max(1e-6)).product();
            let kept: Vec<f32> = chosen
                .iter()
                .filter(|(c, _)| c.is_some())
                .map(|(_, p)| *p)
                .collect();
            let Some((plate, fit)) = read_plate(&text, self.region, &self.layouts) else {
                return;
            };
            let r = Reading {
                text: plate,
                score: product * fit,
                confidence: geometric_mean(&kept) * fit,
            };
            match out.iter_mut().find(|o| o.text == r.text) {
                Some(o) if o.score < r.score => *o = r,
                Some(_) => {}
                None => out.push(r),
            }
        });
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out
    }
}

fn geometric_mean(p: &[f32]) -> f32 {
    if p.is_empty() {
        return 0.0;
    }
    (p.iter().map(|p| p.max(1e-6).ln()).sum::<f32>() / p.len() as f32).exp()
}

/// Calls `f` with every choice of one option per character that changes at most
/// `changes` characters from the first options.
fn paths(
    options: &[Vec<(Option<char>, f32)>],
    at: usize,
    changes: usize,
    path: &mut Vec<(Option<char>, f32)>,
    f: &mut impl FnMut(&[(Option<char>, f32)]),
) {
    if at == options.len() {
        f(path);
        return;
    }
    for (k, &o) in options[at].iter().enumerate() {
        if k > 0 && changes == 0 {
            break;
        }
        path.push(o);
        paths(options, at + 1, changes - (k > 0) as usize, path, f);
        path.pop();
    }
}

/// The region's rules alone (tests).
#[cfg(test)]
fn plate(text: &str, region: Region) -> Option<(String, f32)> {
    read_plate(text, region, &[])
}

/// The best plate reading of a recognised text for a region and extra layouts,
/// with a weight in (0, 1] for how well it fits the formats; `None` when it cannot
/// be a plate.
fn read_plate(text: &str, region: Region, layouts: &[String]) -> Option<(String, f32)> {
    if looks_like_clock(text.trim()) {
        return None;
    }
    let mut t: Vec<char> = normalize(text).chars().collect();
    if region == Region::Us {
        // A text with no digit is a word (a state, a slogan, a make), not a plate.
        if !t.iter().any(char::is_ascii_digit) {
            return None;
        }
        // Most US states issue no letter O, and those that do print it like the
        // digit: ALPR systems there read both as 0.
        for c in &mut t {
            if *c == 'O' {
                *c = '0';
            }
        }
    }
    let (mut min, mut max) = region.lengths();
    for l in layouts {
        (min, max) = (min.min(l.len()), max.max(l.len()));
    }
    let mut best: Option<(String, f32)> = None;
    let mut consider = |s: String, w: f32| {
        if best.as_ref().is_none_or(|(_, bw)| w > *bw) {
            best = Some((s, w));
        }
    };
    // The whole text, or a window of it (a country band or a sticker read along).
    for len in (min..=max.min(t.len())).rev() {
        for start in 0..=(t.len() - len) {
            let window = &t[start..start + len];
            let trimmed = (t.len() - len) as f32;
            for p in region.patterns() {
                if let Some((s, fixes)) = fit(window, p) {
                    consider(s, 1.0 - 0.1 * fixes as f32 - 0.1 * trimmed);
                }
            }
            for p in layouts {
                if let Some((s, 0)) = fit(window, p) {
                    consider(s, 1.0 - 0.1 * trimmed);
                }
            }
            let digits = window.iter().filter(|c| c.is_ascii_digit()).count();
            let letters = len - digits;
            let generic_ok = digits > 0 && (region != Region::Eu || letters > 0);
            if generic_ok && start == 0 && len == t.len() && !looks_like_date(window) {
                // Plates mix letters and digits far more often than not.
                let w = if letters > 0 { 0.6 } else { 0.4 };
                consider(
                    window.iter().collect(),
                    if layouts.is_empty() {
                        w
                    } else {
                        w * LAYOUT_PRIOR
                    },
                );
            }
        }
    }
    best.filter(|(_, w)| *w > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brazilian_formats_fix_confusions_by_position() {
        assert_eq!(plate("ABC-1234", Region::Br), Some(("ABC1234".into(), 1.0)));
        // O read for 0 and 8 for B.
        let (p, w) = plate("A8C12O4", Region::Br).unwrap();
        assert_eq!(p, "ABC1204");
        assert!(w < 1.0);
        // Mercosur, with the country band read along.
        assert_eq!(plate("BRA2E19", Region::Br).unwrap().0, "BRA2E19");
        assert!(plate("BRASIL", Region::Br).is_none());
    }

    /// Glyphs read with probability `p`, with no likely alternative.
    fn sure(text: &str, p: f32) -> Vec<Glyph> {
        text.chars()
            .map(|ch| Glyph {
                ch,
                p,
                letter: (if ch.is_ascii_alphabetic() { ch } else { 'X' }, 0.001),
                digit: (if ch.is_ascii_digit() { ch } else { '1' }, 0.001),
                blank: 0.001,
            })
            .collect()
    }

    fn best(rules: &Rules, glyphs: &[Glyph]) -> Reading {
        let raw: String = glyphs.iter().map(|g| g.ch).collect();
        rules.readings(&raw, glyphs).remove(0)
    }

    #[test]
    fn configured_layouts_take_the_recognisers_likely_alternative_by_position() {
        // MHG V4L, the G nearly as likely a 6.
        let mut g = sure("MHGV4L", 0.95);
        g[2].p = 0.82;
        g[2].digit = ('6', 0.14);
        let us = Rules::new(Region::Us, &[]).unwrap();
        assert_eq!(best(&us, &g).text, "MHGV4L", "no layout, no guess");
        let missouri = Rules::new(Region::Us, &["LLNLNL".into()]).unwrap();
        let r = best(&missouri, &g);
        assert_eq!(r.text, "MH6V4L");
        assert!(r.confidence < 0.95, "{r:?}");
        assert!(Rules::new(Region::Us, &["LLN-LNL".into()]).is_err());
        assert!(Rules::new(Region::Us, &["LNL".into()]).is_err());
    }

    #[test]
    fn a_layout_never_forces_a_character_the_recogniser_ruled_out() {
        let missouri = Rules::new(Region::Us, &["LLNLNL".into()]).unwrap();
        assert_eq!(best(&missouri, &sure("YDGL3C", 0.9)).text, "YDGL3C");
        assert_eq!(
            best(&missouri, &sure("7ABC123", 0.9)).text,
            "7ABC123",
            "other plates as before"
        );
        assert_eq!(missouri.plate("YD6L3C").unwrap().1, 1.0);
        assert!(missouri.plate("YDGL3C").unwrap().1 < 0.1);
    }

    #[test]
    fn a_character_nearly_as_likely_nothing_may_be_left_out() {
        // AKS O 4329: the O barely there.
        let mut g = sure("AKSO4329", 0.98);
        g[3].p = 0.43;
        g[3].blank = 0.40;
        let us = Rules::new(Region::Us, &[]).unwrap();
        let raw: String = g.iter().map(|g| g.ch).collect();
        let r = us.readings(&raw, &g);
        let score = |t: &str| r.iter().find(|r| r.text == t).unwrap().score;
        assert_eq!(r[0].text, "AKS04329", "O is 0 in the US");
        assert!((score("AKS4329") / score("AKS04329") - 0.40 / 0.43).abs() < 1e-3);
        // A sure character is never left out.
        assert!(r.iter().all(|r| r.text.len() >= 7), "{r:?}");
    }

    #[test]
    fn a_clock_overlay_has_no_plate_readings_whatever_its_alternatives() {
        let us = Rules::new(Region::Us, &[]).unwrap();
        let mut g = sure("20140512083410", 0.99);
        g[4].blank = 0.3;
        assert!(us.readings("2014-05-12 08:34:10", &g).is_empty());
        assert!(us.readings("", &[]).is_empty());
    }

    #[test]
    fn european_layouts_fix_confusions_by_position() {
        // Poland: two letters, five digits.
        assert_eq!(plate("WA56660", Region::Eu), Some(("WA56660".into(), 1.0)));
        assert_eq!(plate("WA56G60", Region::Eu).unwrap().0, "WA56660");
        // Germany: three letters (district and letters run together), four digits.
        assert_eq!(plate("BAB1234", Region::Eu), Some(("BAB1234".into(), 1.0)));
        // The United Kingdom.
        assert_eq!(plate("AB12CDE", Region::Eu), Some(("AB12CDE".into(), 1.0)));
    }

    #[test]
    fn texts_without_digits_or_of_the_wrong_length_are_not_plates() {
        assert!(plate("STOP", Region::Us).is_none());
        assert!(plate("12", Region::Any).is_none());
        assert!(
            plate("2014-04-28", Region::Us).is_none(),
            "a timestamp overlay"
        );
        assert_eq!(plate("7ABC123", Region::Us).unwrap().0, "7ABC123");
        assert_eq!(
            plate("583XGN", Region::Us).unwrap().0,
            "583XGN",
            "no guessed layout"
        );
        assert_eq!(plate("xyz 99", Region::Any).unwrap().0, "XYZ99");
        assert_eq!(
            plate("HB6LOZ", Region::Us).unwrap().0,
            "HB6L0Z",
            "O is 0 in the US"
        );
    }
}
