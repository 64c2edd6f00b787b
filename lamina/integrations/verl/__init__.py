"""Running lamina inside verl: GiGPO registered as a verl advantage estimator (``estimators``)."""
