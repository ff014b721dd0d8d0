//! The forms of a split tensor on two reference engines: every conversion the ops ask for
//! gives back the values put in (the whole-network equality is `tests/columns.rs`).
use super::buf::Form;
use super::{ColBuf, Columns};
use crate::backend::Backend;
use crate::reference::{random_tensor, RefBackend, RefBuf};

fn cols() -> Columns<RefBackend> {
    Columns::new([RefBackend::new(), RefBackend::new()])
}

/// What each column's store holds.
fn stores(c: &mut Columns<RefBackend>, p: [&RefBuf; 2]) -> [Vec<f32>; 2] {
    [
        c.column(0).download(p[0]).unwrap(),
        c.column(1).download(p[1]).unwrap(),
    ]
}

#[test]
fn whole_to_halves_and_back_keeps_every_value_in_its_row() {
    // 3 rows of 2 halves of 5 values: column d must hold values 10r + 5d .. 10r + 5d + 5.
    let mut c = cols();
    let data = random_tensor(7, 30, 1.0);
    let b: ColBuf<RefBuf> = c.alloc(30, "t").unwrap();
    c.upload(&b, &data).unwrap();
    let h = c.half(&b, 3).unwrap();
    assert_eq!(b.form(), Form::Both);
    let got = stores(&mut c, h);
    for (d, col) in got.iter().enumerate() {
        let want: Vec<f32> = (0..3)
            .flat_map(|r| data[10 * r + 5 * d..10 * r + 5 * d + 5].to_vec())
            .collect();
        assert_eq!(col, &want, "column {d}");
    }
    // Written as halves, read whole: a gather, counted once, that restores the rows.
    b.form.set(Form::Half);
    let w = c.whole(&b).unwrap();
    let [w0, w1] = stores(&mut c, w);
    assert_eq!((w0.as_slice(), w1.as_slice()), (&data[..], &data[..]));
    assert_eq!(c.download(&b).unwrap(), data);
    let s = c.take_stats();
    assert_eq!((s.exchanges, s.bytes), (1, 30 * 4), "{s:?}");
}

#[test]
fn partial_sums_read_as_halves_or_whole_are_summed() {
    let mut c = cols();
    let (p0, p1) = (random_tensor(1, 12, 1.0), random_tensor(2, 12, 1.0));
    let sum: Vec<f32> = p0.iter().zip(&p1).map(|(a, b)| a + b).collect();
    let b: ColBuf<RefBuf> = c.alloc(12, "dx").unwrap();
    let w = c.whole_store(&b).unwrap();
    c.column(0).upload(w[0], &p0).unwrap();
    c.column(1).upload(w[1], &p1).unwrap();
    b.form.set(Form::Partial);
    assert_eq!(c.download(&b).unwrap(), sum);
    // Two rows of 2 × 3: column d gets the sum's d-th half of each row.
    let h = c.half(&b, 2).unwrap();
    assert_eq!(b.form(), Form::Half);
    let got = stores(&mut c, h);
    assert_eq!(got[0], [&sum[0..3], &sum[6..9]].concat());
    assert_eq!(got[1], [&sum[3..6], &sum[9..12]].concat());
    assert_eq!(c.download(&b).unwrap(), sum);

    let b2: ColBuf<RefBuf> = c.alloc(12, "dx2").unwrap();
    let w = c.whole_store(&b2).unwrap();
    c.column(0).upload(w[0], &p0).unwrap();
    c.column(1).upload(w[1], &p1).unwrap();
    b2.form.set(Form::Partial);
    let w = c.whole(&b2).unwrap();
    let [w0, w1] = stores(&mut c, w);
    assert_eq!((w0.as_slice(), w1.as_slice()), (&sum[..], &sum[..]));
}

#[test]
fn a_tensor_split_in_other_rows_is_refused() {
    let mut c = cols();
    let b: ColBuf<RefBuf> = c.alloc(12, "t").unwrap();
    c.half(&b, 2).unwrap();
    let Err(err) = c.half(&b, 3) else {
        panic!("split in 2 rows, then 3, was accepted")
    };
    assert!(err.to_string().contains("t of 12 values"), "{err}");
    let odd: ColBuf<RefBuf> = c.alloc(5, "odd").unwrap();
    assert!(c.half(&odd, 1).is_err());
}
