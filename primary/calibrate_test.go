package primary

import (
	"context"
	"testing"
)

// TestCalibrate: the calibration measures both paths at every size on the
// live database, picks a size it measured (or twice the largest when COPY
// never won), and leaves no table behind.
func TestCalibrate(t *testing.T) {
	t.Parallel()
	b := setup(t, ApplierConfig{})
	sizes := []int{50, 200, 800}
	cal, err := Calibrate(context.Background(), b.pool, CalibrateOptions{Sizes: sizes, Rounds: 1, DetailsBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(cal.Points) != len(sizes) {
		t.Fatalf("%d points, want %d", len(cal.Points), len(sizes))
	}
	for _, p := range cal.Points {
		if p.Unnest <= 0 || p.Copy <= 0 {
			t.Errorf("point %+v lacks a measurement", p)
		}
	}
	if cal.Threshold != 50 && cal.Threshold != 200 && cal.Threshold != 800 && cal.Threshold != 1600 {
		t.Errorf("threshold %d is none of the sizes measured", cal.Threshold)
	}
	if n := b.count(t, `SELECT count(*) FROM insights`); n != 0 {
		t.Errorf("calibration left %d rows in insights", n)
	}
	t.Logf("crossover %d (%s)", cal.Threshold, cal)
}

func TestCrossover(t *testing.T) {
	for _, c := range []struct {
		points []CalibrationPoint
		want   int
	}{
		{[]CalibrationPoint{{100, 1, 2}, {200, 2, 1}, {400, 4, 2}}, 200},
		{[]CalibrationPoint{{100, 2, 1}, {200, 1, 2}, {400, 4, 2}}, 400}, // COPY must win from there on
		{[]CalibrationPoint{{100, 1, 2}, {200, 1, 2}}, 400},              // never: beyond the largest
	} {
		if got := crossover(c.points); got != c.want {
			t.Errorf("crossover(%v) = %d, want %d", c.points, got, c.want)
		}
	}
}
