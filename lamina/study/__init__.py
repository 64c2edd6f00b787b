"""The layer study: sweeps of single-block training, contribution scores, rank correlation, plots.

lamina sweep study.layers=[0,7,15,22,29] study.seeds=[0,1]     (``lamina.study.sweep``)
lamina compare SWEEP_A SWEEP_B                                  (``lamina.study.compare``)
lamina weights RUN                                              (``lamina.study.weights``)
``lamina.study.ensemble.load_ensemble(sweep, k)``: the top-K single-block policies voting.
"""
