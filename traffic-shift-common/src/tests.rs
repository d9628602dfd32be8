use super::{
    FAMILY_V4, NatEntry, NatKey, addr_from_ip4, addr_from_words, addr_words, csum_replace,
};

#[test]
fn addresses_are_the_kernels_words_reinterpreted_not_swapped() {
    // 127.100.0.1 as the kernel holds it in `user_ip4`: network order.
    let word = u32::from_ne_bytes([127, 100, 0, 1]);
    let addr = addr_from_ip4(word);
    assert_eq!(addr, [127, 100, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(addr_words(addr), [word, 0, 0, 0]);
    let words = [1, 2, 3, 0xdead_beef];
    assert_eq!(addr_words(addr_from_words(words)), words);

    let key = NatKey {
        src: addr,
        dst: addr_from_words(words),
        sport: 0,
        dport: 0,
        family: FAMILY_V4,
        pad: [0; 3],
    };
    assert_eq!(key.addr_words(), (&[word, 0, 0, 0], &words));
    let entry = NatEntry {
        src: key.dst,
        dst: key.src,
        sport: 0,
        dport: 0,
        stat_id: 0,
        last_seen_ns: 0,
        flags: 0,
        family: FAMILY_V4,
        hop_dmac: [0; 6],
        hop_smac: [0; 6],
        pad: [0; 2],
        hop_ifindex: 0,
        hop_checked: 0,
        fin_end: 0,
        pad_end: 0,
    };
    assert_eq!(entry.addr_words(), (&words, &[word, 0, 0, 0]));
}

/// The one's complement checksum of `words` (16-bit halves), computed
/// from scratch.
fn full(words: &[u32]) -> u16 {
    let mut sum: u64 = words
        .iter()
        .map(|w| u64::from(w & 0xffff) + u64::from(w >> 16))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap())
}

#[test]
fn incremental_update_equals_a_full_recomputation() {
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for _ in 0..10_000 {
        let mut words = [0u32; 12];
        for w in &mut words {
            *w = next();
        }
        let check = full(&words);
        let old = [words[3], words[7]];
        let new = [next(), if next() % 4 == 0 { 0xffff_ffff } else { next() }];
        words[3] = new[0];
        words[7] = new[1];
        let updated = csum_replace(check, &old, &new);
        // 0x0000 and 0xffff are the same one's complement number.
        let want = full(&words);
        assert!(
            updated == want || (updated == 0 && want == 0xffff) || (updated == 0xffff && want == 0),
            "{updated:#06x} vs {want:#06x}"
        );
    }
}
