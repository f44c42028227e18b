"""Operations routes: liveness, readiness, served models and their reload."""
