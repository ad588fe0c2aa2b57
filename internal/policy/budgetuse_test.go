package policy

import (
	"math"
	"testing"
	"time"
)

func TestBudgetUse(t *testing.T) {
	if _, ok := (*Budget)(nil).Use(time.Now()); ok {
		t.Error("a nil budget reports use")
	}
	free, err := NewBudget(OffloadConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := free.Use(time.Now()); ok {
		t.Error("a budget without caps reports use")
	}

	b, err := NewBudget(OffloadConfig{CloudMaxRPS: 2, CloudMaxCostPerHour: 100, BudgetBurst: time.Second, LambdaMemoryMB: 3008})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if got, want := b.Take(t0, 100*time.Millisecond), i < 2; got != want {
			t.Fatalf("take %d: %v, want %v (a burst of 2 calls)", i, got, want)
		}
	}
	use, ok := b.Use(t0)
	if !ok || use.Calls != 2 || use.MaxRPS != 2 || math.Abs(use.MaxCostPerHour-100) > 1e-9 || use.Used != 1 {
		t.Errorf("use at once = %+v, %v; want 2 calls, caps 2/s and $100/h, all of the burst used", use, ok)
	}
	if want := 2 * CallCost(100*time.Millisecond, 3008, DefaultPricePerGBSecond, DefaultPricePerRequest); math.Abs(use.SpentUSD-want) > 1e-12 {
		t.Errorf("spent %v, want %v", use.SpentUSD, want)
	}
	if use, _ := b.Use(t0.Add(time.Second)); use.Used != 0 || use.Calls != 2 {
		t.Errorf("use a second later = %+v, want the burst back and the totals kept", use)
	}
}
