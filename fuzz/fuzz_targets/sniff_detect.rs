//! The default sniff plugin's protocol detector (`plugins/sniff/src/detect.rs`),
//! linked natively, and the plugin's decision on top of it.
//!
//! Beyond "no panic": the sniff stage calls the detector on a growing
//! buffer and acts on the first answer that is not "need more", so
//! - a prefix's verdict is `NeedMore` or the verdict on the whole input
//!   (deciding early must never contradict what more bytes would show);
//! - the last call (`complete`) decides whatever `detect` already decided;
//! - the plugin asks for more bytes only while the detector does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sniff::detect::{Detection, detect, detect_final};
use sniff::{Decision, Settings, decide};

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    for end in cut_points(data) {
        let part = detect(&data[..end]);
        assert!(
            part == Detection::NeedMore || part == whole,
            "the first {end} bytes are {part:?}, all {} bytes are {whole:?}: {:?}",
            data.len(),
            String::from_utf8_lossy(&data[..end.min(200)]),
        );
    }
    let last = detect_final(data);
    match whole {
        Detection::Found(protocol) => assert_eq!(last, Some(protocol)),
        Detection::NoMatch => assert_eq!(last, None),
        Detection::NeedMore => {}
    }
    let settings = Settings::default();
    let decision = decide(&settings, data, false, None);
    assert_eq!(decision == Decision::NeedMore, whole == Detection::NeedMore, "{decision:?} for {whole:?}");
    assert_ne!(decide(&settings, data, true, None), Decision::NeedMore, "the last call must decide");
});

/// Every short prefix, the end of the first line and a few more, so a run
/// stays linear in the input's length.
fn cut_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    let mut cuts: Vec<usize> = (0..n.min(32)).collect();
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        cuts.extend([newline, newline + 1]);
    }
    cuts.extend([n / 2, n.saturating_sub(1), 8192.min(n), 8193.min(n)]);
    if let Some(&b) = data.get(3) {
        cuts.push(usize::from(b) * n / 256);
    }
    cuts
}
