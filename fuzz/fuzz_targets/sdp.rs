//! Any SDP body: parsing and answering never panic, and an answer is an SDP body we parse ourselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_sip::sdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = sdp::parse(data)
        && let Ok((answer, _)) = sdp::answer(&offer, "127.0.0.1", 20000, (1, 1))
    {
        sdp::parse(answer.as_bytes()).expect("our answer parses");
    }
});
