"""Shipped schedules of `OptimisedGrid`: generated, do not edit.

Written by `benchmarks/default_design.py --fit`; each table is the fraction of the
way in log-SNR from lambda(T) to lambda(t_min) of the N + 1 grid points.
Tune set: design_set('tune') of mixture_families.py (20 mixtures),
pilot 512 per mixture (half fit, half validation). Each table
is (1 - a) x log-SNR + a x Karras (rho = 7) in that coordinate, a found by
a bounded scalar search (at most 8 evaluations); fitted a: N = 9: 0.1205.
"""

SCHEDULES: dict[int, tuple[float, ...]] = {
    9: (
        0.00000000,
        0.10493629,
        0.21059258,
        0.31712863,
        0.42476405,
        0.53381258,
        0.64474500,
        0.75831524,
        0.87584602,
        1.00000000,
    ),
}
