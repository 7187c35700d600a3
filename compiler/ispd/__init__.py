"""The ISPD 2020 kernel-placement contest: its solution format (solution),
scorer (score), compile driver (driver), command line (cli) and
contest-style variants of kernel graphs for benchmarks (variants).

wsec reads the contest's kernel graphs (wsec.frontends.kgraph), sizes them
with the `cs1` kernel kinds (wsec.ir.library_cs1) and places them with the
ordinary size and place passes, minimising the header's weighted objective
(wsec.ir.objective).
"""
