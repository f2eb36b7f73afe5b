//! A small seeded generator for the property tests: SplitMix64 (Steele, Lea and Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014) and the few draws the
//! structure-aware generators need. No dependency: a failing case is replayed from its
//! seed, printed by [`cases`].

/// A deterministic random source.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num`/`den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }

    /// Text drawn from `alphabet`.
    pub fn text(&mut self, alphabet: &[char], len: usize) -> String {
        (0..len).map(|_| *self.pick(alphabet)).collect()
    }

    /// Any text: ASCII with the characters parsers care about (quotes, backslashes,
    /// commas, control characters), and some beyond ASCII.
    pub fn any_text(&mut self, len: usize) -> String {
        const SPECIAL: &[char] = &[
            '"',
            '\\',
            ',',
            ':',
            ';',
            ' ',
            '\t',
            '\r',
            '\n',
            '\0',
            '\u{7f}',
            'é',
            'ß',
            '€',
            '\u{1F4F6}',
            '\u{FFFD}',
            '\u{80}',
        ];
        (0..len)
            .map(|_| match self.below(4) {
                0 => *self.pick(SPECIAL),
                _ => char::from(self.range(0x20, 0x7E) as u8),
            })
            .collect()
    }

    /// Cut `len` bytes into chunks: the ways a serial port may hand them over.
    pub fn splits(&mut self, len: usize) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < len {
            let step = match self.below(3) {
                0 => 1,
                1 => self.range(1, 8),
                _ => self.range(1, 256),
            };
            at = (at + step).min(len);
            cuts.push(at);
        }
        cuts
    }
}

/// How many cases each property runs: `SIMGATE_PROP_CASES` (a number) scales every
/// property to that many, for a longer run by hand; `make test` uses the defaults.
pub fn case_count(default: usize) -> usize {
    std::env::var("SIMGATE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `check` over `n` seeded cases (`SIMGATE_PROP_SEED` replays one). A failing case
/// panics naming the property and its seed.
pub fn cases(name: &str, n: usize, mut check: impl FnMut(&mut Rng)) {
    if let Some(seed) = std::env::var("SIMGATE_PROP_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
    {
        check(&mut Rng::new(seed));
        return;
    }
    let base = crate::contract::payload_hash(name.as_bytes());
    for i in 0..case_count(n) as u64 {
        let seed = base ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mut Rng::new(seed))));
        if let Err(e) = outcome {
            let why = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            panic!(
                "property {name} failed on case {i}: {why}\n  replay: SIMGATE_PROP_SEED={seed:x}"
            );
        }
    }
}
