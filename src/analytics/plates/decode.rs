//! Layout-constrained decoding of the recogniser's output (pure).
//!
//! The recogniser gives, for each of its time steps, a probability for every
//! character and for none (CTC's blank). [`Lattice`] keeps the part a plate needs:
//! blank, `0-9` and `A-Z` (lower case added to upper case; every other character
//! counts as none). [`search`] is a CTC prefix beam search over it: each text's
//! probability is summed over all the ways the steps can spell it, and with
//! [`Pattern`]s a text is only extended while it can still become one of them —
//! so a `6` the recogniser found likely at a place where the layout wants a letter
//! gives way to the letter only as far as the recogniser gave the letter
//! probability there. A few characters before or after the layout (a country band,
//! a bolt, a sticker) may be read along and are then left out of the plate.

use std::collections::HashMap;

/// Classes of a lattice row: blank, then these 36 symbols.
pub const SYMBOLS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const CLASSES: usize = 37;
const BLANK: usize = 0;

/// Class of an upper-case letter or digit.
fn class(c: char) -> Option<usize> {
    SYMBOLS
        .iter()
        .position(|&s| s as char == c.to_ascii_uppercase())
        .map(|i| i + 1)
}

/// Per time step: the probability of none (blank) and of each symbol.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lattice {
    rows: Vec<[f32; CLASSES]>,
}

impl Lattice {
    #[cfg(test)]
    pub fn new(rows: Vec<[f32; CLASSES]>) -> Self {
        Self { rows }
    }

    /// From `steps` x `classes` probabilities, where `symbol[i]` is class `i`'s
    /// character (upper case letter or digit) or `None` (anything else, which
    /// adds to blank; class 0 is blank).
    pub fn from_probs(
        probs: &[f32],
        steps: usize,
        classes: usize,
        symbol: &[Option<char>],
    ) -> Self {
        let map: Vec<usize> = (0..classes)
            .map(|i| {
                symbol
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(class)
                    .unwrap_or(BLANK)
            })
            .collect();
        let rows = probs
            .chunks_exact(classes)
            .take(steps)
            .map(|row| {
                let mut r = [0f32; CLASSES];
                for (p, &to) in row.iter().zip(&map) {
                    r[to] += p;
                }
                r
            })
            .collect();
        Self { rows }
    }

    /// Reads every `from` as `to` (a region that prints O like 0).
    pub fn fold(&mut self, from: char, to: char) {
        if let (Some(f), Some(t)) = (class(from), class(to)) {
            for r in &mut self.rows {
                r[t] += r[f];
                r[f] = 0.0;
            }
        }
    }

    /// Makes `a` at least `share` as likely as `b` and `b` as `a` (look-alikes
    /// that the layout, not the recogniser, tells apart); each step is then scaled
    /// back to a total of one.
    pub fn twin(&mut self, a: char, b: char, share: f32) {
        let (Some(a), Some(b)) = (class(a), class(b)) else {
            return;
        };
        if share <= 0.0 {
            return;
        }
        for r in &mut self.rows {
            let (pa, pb) = (r[a], r[b]);
            r[a] = pa.max(share * pb);
            r[b] = pb.max(share * pa);
            let total: f32 = r.iter().sum();
            if total > 0.0 {
                r.iter_mut().for_each(|v| *v /= total);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One place of a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Letter,
    Digit,
    Any,
    Is(u8),
}

impl Slot {
    fn accepts(self, symbol: u8) -> bool {
        match self {
            Slot::Letter => symbol.is_ascii_uppercase(),
            Slot::Digit => symbol.is_ascii_digit(),
            Slot::Any => true,
            Slot::Is(c) => c == symbol,
        }
    }
}

/// A plate's main line: one slot per character.
pub type Pattern = Vec<Slot>;

/// Layouts longer than this are not plates.
pub const MAX_LAYOUT: usize = 10;

/// A layout spelled more ways than this is refused (the automaton numbers them).
const MAX_PATTERNS: usize = 4096;

/// Every pattern a layout stands for: `L` letter, `N` digit, `X` either, an upper
/// case letter or digit itself, `{a,b}` after one of them for a to b of it (b at
/// most 9), and `(ZG|ST)` one of these letters and digits (a closed list, such as
/// a country's district codes). E.g. `L{1,2}N{2}` gives `LNN`, `LLNN`.
pub fn expand(layout: &str) -> Result<Vec<Pattern>, String> {
    let bad = |why: &str| Err(format!("layout {layout:?}: {why}"));
    // The ways each written group can be spelled.
    let mut groups: Vec<Vec<Pattern>> = Vec::new();
    let mut chars = layout.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '(' {
            let mut spec = String::new();
            loop {
                match chars.next() {
                    Some(')') => break,
                    Some(c) => spec.push(c),
                    None => return bad("a list opened with ( is not closed"),
                }
            }
            let alternatives: Vec<Pattern> = spec
                .split('|')
                .map(|a| a.bytes().map(Slot::Is).collect::<Pattern>())
                .collect();
            let literal = |a: &Pattern| {
                !a.is_empty()
                    && a.iter().all(|s| matches!(s, Slot::Is(c) if c.is_ascii_digit() || c.is_ascii_uppercase()))
            };
            if !alternatives.iter().all(literal) || chars.peek() == Some(&'{') {
                return bad("a list is (AB|CD|...) of letters and digits, without a repeat");
            }
            groups.push(alternatives);
            continue;
        }
        let slot = match c {
            'L' => Slot::Letter,
            'N' => Slot::Digit,
            'X' => Slot::Any,
            c if c.is_ascii_digit() || c.is_ascii_uppercase() => Slot::Is(c as u8),
            _ => {
                return bad(
                    "expected L (letter), N (digit), X (either), A-Z, 0-9, {a,b} or (AB|CD)",
                )
            }
        };
        let (mut lo, mut hi) = (1, 1);
        if chars.peek() == Some(&'{') {
            chars.next();
            let spec: String = chars.by_ref().take_while(|&c| c != '}').collect();
            let (a, b) = spec.split_once(',').unwrap_or((&spec, &spec));
            match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if a >= 1 && a <= b && b <= 9 => (lo, hi) = (a, b),
                _ => return bad("a repeat is {a,b} with 1 <= a <= b <= 9"),
            }
        }
        groups.push((lo..=hi).map(|n| vec![slot; n]).collect());
    }
    let mut out: Vec<Pattern> = vec![Vec::new()];
    for alternatives in groups {
        out = out
            .iter()
            .flat_map(|p| {
                alternatives.iter().map(move |a| {
                    let mut q = p.clone();
                    q.extend_from_slice(a);
                    q
                })
            })
            .filter(|p| p.len() <= MAX_LAYOUT)
            .collect();
    }
    out.retain(|p| p.len() >= 2);
    if out.len() > MAX_PATTERNS {
        return bad("more than 4096 patterns");
    }
    if out.is_empty() {
        return bad("no pattern of 2 to 10 characters");
    }
    Ok(out)
}

/// Where a text fits a pattern: its characters `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub start: usize,
    pub end: usize,
}

/// A thread of the layout automaton: pattern, characters of it matched, where it
/// began, characters read after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Thread {
    pattern: u16,
    pos: u8,
    start: u8,
    after: u8,
}

/// Which layouts a prefix can still become.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct State {
    /// Every character so far could be read along before a layout (while at most
    /// `extra`).
    before: bool,
    threads: Vec<Thread>,
}

struct Automaton<'a> {
    patterns: &'a [Pattern],
    extra: usize,
}

impl Automaton<'_> {
    fn start(&self) -> State {
        State {
            before: true,
            threads: Vec::new(),
        }
    }

    /// The state after `prefix` (of length `len` before `symbol`) reads `symbol`;
    /// `None` when no layout can follow.
    fn next(&self, s: &State, len: usize, symbol: u8) -> Option<State> {
        let mut threads: Vec<Thread> = Vec::new();
        for t in &s.threads {
            let p = &self.patterns[t.pattern as usize];
            if (t.pos as usize) < p.len() {
                if p[t.pos as usize].accepts(symbol) {
                    threads.push(Thread {
                        pos: t.pos + 1,
                        ..*t
                    });
                }
            } else if (t.after as usize) < self.extra {
                threads.push(Thread {
                    after: t.after + 1,
                    ..*t
                });
            }
        }
        if s.before {
            for (i, p) in self.patterns.iter().enumerate() {
                if p[0].accepts(symbol) {
                    threads.push(Thread {
                        pattern: i as u16,
                        pos: 1,
                        start: len as u8,
                        after: 0,
                    });
                }
            }
        }
        threads.sort_unstable();
        threads.dedup();
        let before = s.before && len < self.extra;
        (before || !threads.is_empty()).then_some(State { before, threads })
    }

    /// The fits of a complete text, fewest characters left out first.
    fn fits(&self, s: &State, len: usize) -> Vec<Fit> {
        let mut fits: Vec<Fit> = s
            .threads
            .iter()
            .filter(|t| t.pos as usize == self.patterns[t.pattern as usize].len())
            .map(|t| Fit {
                start: t.start as usize,
                end: t.start as usize + t.pos as usize,
            })
            .collect();
        fits.sort_by_key(|f| (len - (f.end - f.start), f.start));
        fits.dedup();
        fits
    }
}

/// A text the search found: its symbols, its probability (summed over the ways
/// the steps spell it), and where it fits the patterns (empty without patterns).
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub text: String,
    pub p: f64,
    pub fits: Vec<Fit>,
}

/// A symbol less likely than this at a step is not tried there.
const MIN_SYMBOL: f32 = 1e-4;

/// CTC prefix beam search keeping `width` texts; with `patterns`, only texts that
/// fit one of them, with up to `extra` characters before and after, are kept and
/// returned. Best first.
pub fn search(
    lattice: &Lattice,
    width: usize,
    patterns: Option<&[Pattern]>,
    extra: usize,
) -> Vec<Hypothesis> {
    #[derive(Clone)]
    struct Beam {
        text: Vec<u8>,
        blank: f64,
        other: f64,
        state: State,
    }
    let auto = patterns.map(|patterns| Automaton { patterns, extra });
    let mut beams = vec![Beam {
        text: Vec::new(),
        blank: 1.0,
        other: 0.0,
        state: auto.as_ref().map(|a| a.start()).unwrap_or_default(),
    }];
    for row in &lattice.rows {
        let mut next: Vec<Beam> = Vec::with_capacity(beams.len() * 4);
        let mut index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(beams.len() * 4);
        let mut add = |text: Vec<u8>, state: &dyn Fn() -> Option<State>, blank: f64, other: f64| {
            if let Some(&i) = index.get(&text) {
                let b: &mut Beam = &mut next[i];
                b.blank += blank;
                b.other += other;
            } else if let Some(state) = state() {
                index.insert(text.clone(), next.len());
                next.push(Beam {
                    text,
                    blank,
                    other,
                    state,
                });
            }
        };
        for b in &beams {
            let total = b.blank + b.other;
            let last = b.text.last().copied();
            // None at this step; or the last character held.
            let held = last.map_or(0.0, |l| {
                b.other * row[SYMBOLS.iter().position(|&s| s == l).unwrap() + 1] as f64
            });
            let same = b.state.clone();
            add(
                b.text.clone(),
                &|| Some(same.clone()),
                total * row[BLANK] as f64,
                held,
            );
            for (k, &sym) in SYMBOLS.iter().enumerate() {
                let p = row[k + 1];
                if p < MIN_SYMBOL {
                    continue;
                }
                // A repeat needs a blank between.
                let from = if last == Some(sym) { b.blank } else { total };
                if from == 0.0 {
                    continue;
                }
                let mut text = b.text.clone();
                text.push(sym);
                let len = b.text.len();
                let state = || match &auto {
                    Some(a) => a.next(&b.state, len, sym),
                    None => Some(State::default()),
                };
                add(text, &state, 0.0, from * p as f64);
            }
        }
        next.sort_by(|a, b| (b.blank + b.other).total_cmp(&(a.blank + a.other)));
        next.truncate(width);
        beams = next;
    }
    let mut out: Vec<Hypothesis> = beams
        .into_iter()
        .filter_map(|b| {
            let fits = match &auto {
                Some(a) => {
                    let f = a.fits(&b.state, b.text.len());
                    if f.is_empty() {
                        return None;
                    }
                    f
                }
                None => Vec::new(),
            };
            Some(Hypothesis {
                text: String::from_utf8(b.text).expect("ascii"),
                p: b.blank + b.other,
                fits,
            })
        })
        .collect();
    out.sort_by(|a, b| b.p.total_cmp(&a.p));
    out
}

/// The probability that the lattice spells `text` (letters and digits): CTC's
/// forward sum over every alignment. 0 for any other character.
pub fn probability(lattice: &Lattice, text: &str) -> f64 {
    let Some(labels) = text.chars().map(class).collect::<Option<Vec<usize>>>() else {
        return 0.0;
    };
    // The extended label sequence: blank, l1, blank, l2, ..., blank.
    let ext: Vec<usize> = std::iter::once(BLANK)
        .chain(labels.iter().flat_map(|&l| [l, BLANK]))
        .collect();
    let mut alpha = vec![0f64; ext.len()];
    for (t, row) in lattice.rows.iter().enumerate() {
        let mut next = vec![0f64; ext.len()];
        for s in 0..ext.len() {
            let mut a = if t == 0 {
                (s < 2) as u8 as f64
            } else {
                alpha[s] + if s > 0 { alpha[s - 1] } else { 0.0 }
            };
            if t > 0 && s > 1 && ext[s] != BLANK && ext[s] != ext[s - 2] {
                a += alpha[s - 2];
            }
            next[s] = a * row[ext[s]] as f64;
        }
        alpha = next;
    }
    match (lattice.rows.len(), ext.len()) {
        (0, _) => labels.is_empty() as u8 as f64,
        (_, 1) => alpha[0],
        (_, n) => alpha[n - 1] + alpha[n - 2],
    }
}

/// Test lattices: a character, its probability, and its alternatives'.
#[cfg(test)]
pub type Step<'a> = (char, f32, &'a [(char, f32)]);

/// Steps spelling `spec`: per character, one step where it has probability
/// `p` and the rest is shared by the alternatives given, then a blank step.
#[cfg(test)]
pub fn lattice(spec: &[Step]) -> Lattice {
    let mut rows = Vec::new();
    for &(c, p, alts) in spec {
        let mut r = [0f32; CLASSES];
        r[class(c).unwrap()] = p;
        let mut left = 1.0 - p;
        for &(a, q) in alts {
            r[class(a).unwrap()] += q;
            left -= q;
        }
        r[BLANK] += left.max(0.0);
        rows.push(r);
        let mut blank = [0f32; CLASSES];
        blank[BLANK] = 1.0;
        rows.push(blank);
    }
    Lattice::new(rows)
}

#[cfg(test)]
pub fn sure(text: &str) -> Lattice {
    let spec: Vec<Step> = text.chars().map(|c| (c, 0.97, &[][..])).collect();
    lattice(&spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(layouts: &[&str]) -> Vec<Pattern> {
        layouts.iter().flat_map(|l| expand(l).unwrap()).collect()
    }

    fn best(lat: &Lattice, layouts: &[&str]) -> Option<(String, Fit)> {
        let p = patterns(layouts);
        search(lat, 16, Some(&p), 2)
            .into_iter()
            .next()
            .map(|h| (h.text.clone(), h.fits[0]))
    }

    #[test]
    fn unconstrained_search_reads_as_is_and_sums_the_spellings() {
        let lat = sure("AB12");
        let h = search(&lat, 8, None, 0);
        assert_eq!(h[0].text, "AB12");
        assert!((h[0].p - 0.97f64.powi(4)).abs() < 1e-4, "{h:?}");
        // Two steps of A with no blank between spell one A: their probabilities add.
        let mut a = [0f32; CLASSES];
        a[class('A').unwrap()] = 0.5;
        a[BLANK] = 0.5;
        let h = search(&Lattice::new(vec![a, a]), 8, None, 0);
        let p = |t: &str| h.iter().find(|h| h.text == t).map_or(0.0, |h| h.p);
        // A blank, blank A, A A: 0.75; AA needs a blank between, impossible in two steps.
        assert!((p("A") - 0.75).abs() < 1e-6, "{h:?}");
        assert_eq!(p("AA"), 0.0);
        assert!((p("") - 0.25).abs() < 1e-6);
    }

    #[test]
    fn a_digit_in_a_letters_place_becomes_the_letter_only_when_the_recogniser_gave_it_some_probability(
    ) {
        // Missouri LLNLNL: the third read as G, with some probability for 6.
        let lat = lattice(&[
            ('M', 0.97, &[]),
            ('H', 0.97, &[]),
            ('G', 0.8, &[('6', 0.15)]),
            ('V', 0.97, &[]),
            ('4', 0.97, &[]),
            ('L', 0.97, &[]),
        ]);
        assert_eq!(best(&lat, &["LLNLNL"]).unwrap().0, "MH6V4L");
        assert_eq!(
            search(&lat, 16, None, 0)[0].text,
            "MHGV4L",
            "no layout, as read"
        );
        // No probability for any digit there: no reading fits.
        assert_eq!(best(&sure("MHGV4L"), &["LLNLNL"]), None);
    }

    #[test]
    fn a_character_read_before_or_after_the_layout_is_left_out() {
        // A Brazilian plate with a bolt read as 1 before it.
        let (text, fit) = best(&sure("1ABC1234"), &["LLLNNNN"]).unwrap();
        assert_eq!((&text[fit.start..fit.end], fit.start), ("ABC1234", 1));
        // And one after.
        let (text, fit) = best(&sure("ABC1234I"), &["LLLNNNN"]).unwrap();
        assert_eq!(&text[fit.start..fit.end], "ABC1234");
        // A text that fits needs nothing left out.
        assert_eq!(
            best(&sure("ABC1234"), &["LLLNNNN"]).unwrap().1,
            Fit { start: 0, end: 7 }
        );
        // Three extra characters are more than a plate's surroundings: the text
        // as read does not fit (only the unlikely spellings that leave one out).
        let p = patterns(&["LLLNNNN"]);
        let found = search(&sure("ABC1234XYZ"), 16, Some(&p), 2);
        assert!(found.iter().all(|h| h.text.len() <= 9), "{found:?}");
    }

    #[test]
    fn layouts_expand_repeats_and_refuse_what_they_cannot_mean() {
        let p = expand("L{1,2}N{2}").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1],
            vec![Slot::Letter, Slot::Letter, Slot::Digit, Slot::Digit]
        );
        assert_eq!(
            expand("D1X").unwrap()[0],
            vec![Slot::Is(b'D'), Slot::Is(b'1'), Slot::Any]
        );
        // Germany: at most 10 long.
        assert!(expand("L{1,3}L{1,2}N{1,4}")
            .unwrap()
            .iter()
            .all(|p| p.len() <= 10));
        assert!(expand("LLN-LNL").is_err());
        assert!(expand("L{0,2}").is_err());
        assert!(expand("L{3,2}").is_err());
        assert!(expand("a").is_err());
        // A closed list: each of its entries, once.
        let p = expand("(ZG|ST)NNNL").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(&p[1][..3], &[Slot::Is(b'S'), Slot::Is(b'T'), Slot::Digit]);
        assert!(expand("(ZG|)N").is_err());
        assert!(expand("(Zg)N").is_err());
        assert!(expand("(ZG){1,2}N").is_err());
        assert!(expand("(ZG|STN").is_err());
    }

    #[test]
    fn folding_o_into_0_moves_its_probability() {
        let mut lat = sure("HB6LOZ");
        lat.fold('O', '0');
        assert_eq!(search(&lat, 8, None, 0)[0].text, "HB6L0Z");
    }

    #[test]
    fn the_forward_probability_agrees_with_the_search() {
        let lat = lattice(&[('A', 0.7, &[('4', 0.2)]), ('A', 0.9, &[])]);
        for h in search(&lat, 64, None, 0) {
            assert!((probability(&lat, &h.text) - h.p).abs() < 1e-9, "{h:?}");
        }
        assert!((probability(&lat, "AA") - 0.7 * 0.9).abs() < 1e-6);
        assert_eq!(probability(&lat, "B"), 0.0);
        assert_eq!(probability(&lat, "A-"), 0.0);
    }

    #[test]
    fn twins_share_probability_and_each_step_stays_a_distribution() {
        let mut lat = lattice(&[('0', 0.9, &[])]);
        lat.twin('O', '0', 0.1);
        let r = lat.rows[0];
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((r[class('O').unwrap()] / r[class('0').unwrap()] - 0.1).abs() < 1e-5);
    }

    #[test]
    fn the_lattice_adds_lower_case_to_upper_and_other_characters_to_none() {
        // Classes: blank, "a", "A", "-".
        let symbol = [None, Some('a'), Some('A'), None];
        let lat = Lattice::from_probs(&[0.1, 0.2, 0.3, 0.4], 1, 4, &symbol);
        let r = lat.rows[0];
        assert!((r[BLANK] - 0.5).abs() < 1e-6 && (r[class('A').unwrap()] - 0.5).abs() < 1e-6);
    }
}
