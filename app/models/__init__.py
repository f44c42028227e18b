"""Tables of the API. Imports only SQLAlchemy and ``common`` (migrations import this package)."""

from app.models.prediction_log import PredictionLog
from app.models.user import User

__all__ = ["PredictionLog", "User"]
