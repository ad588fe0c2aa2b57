package loadgen

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart sizes in pixels.
const (
	ChartWidth  = 1200
	ChartHeight = 900
	chartDPI    = 96
)

var routeColors = map[string]color.Color{
	"local": color.RGBA{R: 31, G: 119, B: 180, A: 255},
	"cloud": color.RGBA{R: 255, G: 127, B: 14, A: 255},
	"error": color.RGBA{R: 214, G: 39, B: 40, A: 255},
	"":      color.RGBA{R: 127, G: 127, B: 127, A: 255},
	// RouteUnknown: call_faas does not say where a call ran.
	RouteUnknown: color.RGBA{R: 127, G: 127, B: 127, A: 255},
}

// WritePNG draws a ChartWidth×ChartHeight chart of res: latency over time
// coloured by route (errors in red), calls per second by route, and the
// pool size.
func WritePNG(w io.Writer, res *Result, title string) error {
	lat := plot.New()
	lat.Title.Text = title
	lat.X.Label.Text = "time since start (s)"
	lat.Y.Label.Text = "latency (ms)"
	lat.Legend.Top = true
	byRoute := map[string]plotter.XYs{}
	for _, p := range res.Points {
		byRoute[p.Route] = append(byRoute[p.Route], plotter.XY{X: p.T, Y: p.LatencyMs})
	}
	for _, route := range []string{"local", "cloud", RouteUnknown, "", "error"} {
		xys := byRoute[route]
		if len(xys) == 0 {
			continue
		}
		s, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("latency points: %w", err)
		}
		s.GlyphStyle.Color = routeColors[route]
		s.GlyphStyle.Radius = vg.Points(1.5)
		s.GlyphStyle.Shape = draw.CircleGlyph{}
		lat.Add(s)
		name := route
		if name == "" {
			name = "no route"
		}
		lat.Legend.Add(fmt.Sprintf("%s (%d)", name, len(xys)), s)
	}
	lat.Add(plotter.NewGrid())

	split := plot.New()
	split.X.Label.Text = "time since start (s)"
	split.Y.Label.Text = "calls/s (sampled)"
	split.Legend.Top = true
	for _, route := range []string{"local", "cloud", RouteUnknown, "error"} {
		xys := perSecond(res.Points, route)
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("split line: %w", err)
		}
		l.Color = routeColors[route]
		l.Width = vg.Points(1.5)
		split.Add(l)
		split.Legend.Add(route, l)
	}
	split.Add(plotter.NewGrid())

	pool := plot.New()
	pool.X.Label.Text = "time since start (s)"
	pool.Y.Label.Text = "pool size"
	if len(res.Pool) > 0 {
		xys := make(plotter.XYs, len(res.Pool))
		for i, s := range res.Pool {
			xys[i] = plotter.XY{X: s.T, Y: float64(s.Size)}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("pool line: %w", err)
		}
		l.StepStyle = plotter.PostStep
		l.Width = vg.Points(1.5)
		pool.Add(l)
		pool.Y.Min = 0
	} else {
		pool.Title.Text = "pool size not reported by the target"
	}
	pool.Add(plotter.NewGrid())

	// Share the x range across the panels.
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, p := range []*plot.Plot{lat, split, pool} {
		if p.X.Min < p.X.Max {
			xmin, xmax = math.Min(xmin, p.X.Min), math.Max(xmax, p.X.Max)
		}
	}
	if xmin < xmax {
		for _, p := range []*plot.Plot{lat, split, pool} {
			p.X.Min, p.X.Max = xmin, xmax
		}
	}

	const px = vg.Inch / chartDPI
	c := vgimg.NewWith(vgimg.UseWH(ChartWidth*px, ChartHeight*px), vgimg.UseDPI(chartDPI))
	dc := draw.New(c)
	top := draw.Crop(dc, 0, 0, ChartHeight*px*0.5, 0)     // upper half
	bottom := draw.Crop(dc, 0, 0, 0, -ChartHeight*px*0.5) // lower half
	lat.Draw(top)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(4)}
	panels := plot.Align([][]*plot.Plot{{split}, {pool}}, tiles, bottom)
	split.Draw(panels[0][0])
	pool.Draw(panels[1][0])
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("write png: %w", err)
	}
	return nil
}

// perSecond counts the points of a route in each whole second. Points may
// be a sample of the calls (see Recorder), so this is a shape, not a count.
func perSecond(points []Point, route string) plotter.XYs {
	counts := map[int]int{}
	last := -1
	for _, p := range points {
		if p.Route != route {
			continue
		}
		s := int(math.Floor(p.T))
		counts[s]++
		last = max(last, s)
	}
	if last < 0 {
		return nil
	}
	xys := make(plotter.XYs, 0, last+1)
	for s := 0; s <= last; s++ {
		xys = append(xys, plotter.XY{X: float64(s) + 0.5, Y: float64(counts[s])})
	}
	return xys
}
