//! Parser throughput: frames a realistic modem stream (echo, information lines, URCs,
//! finals) and reports MB/s. A plain main (harness = false): no criterion to build on
//! small gateways. Run: `cargo bench --bench at_parser`.

use simgate::at::parser::{fields, final_result, frame, Frame};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let one = concat!(
        "AT+CREG?;+CGREG?;+CEREG?;+CSQ;+CGACT?;+QGDCNT?\r",
        "\r\n+CREG: 0,2\r\n",
        "\r\n+CGREG: 2,1,\"D504\",\"80428B5\",7\r\n",
        "\r\n+QSIMSTAT: 1,1\r\n",
        "\r\n+CEREG: 2,1,\"D504\",\"80428B5\",7\r\n",
        "\r\n+CSQ: 20,99\r\n",
        "\r\n+CGACT: 1,1\r\n",
        "\r\n+QGDCNT: 3832,4618\r\n",
        "\r\nOK\r\n",
        "\r\n+QCCID: 8901260886258128535F\r\n\r\nOK\r\n",
        "\r\n+CME ERROR: 10\r\n",
    )
    .as_bytes();
    let mut stream = Vec::new();
    while stream.len() < 8 * 1024 * 1024 {
        stream.extend_from_slice(one);
    }
    let vendor: Vec<String> = Vec::new();
    let rounds = 5;
    let start = Instant::now();
    let mut frames = 0u64;
    for _ in 0..rounds {
        let mut input = stream.as_slice();
        while let Some((f, used)) = frame(input) {
            if let Frame::Line(l) = f {
                if final_result(l, &vendor).is_none() {
                    black_box(fields(l, "+CEREG:"));
                }
            }
            frames += 1;
            input = &input[used..];
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (stream.len() * rounds) as f64 / 1e6;
    println!(
        "AT parser: {:.1} MB/s, {:.2} M frames/s ({} bytes x {rounds}, frame + final + fields)",
        mb / secs,
        frames as f64 / secs / 1e6,
        stream.len()
    );
}
