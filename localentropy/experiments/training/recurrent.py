"""Recurrent models: a character (or word) LSTM language model and an LSTM that reads an image row by row.

``CharLSTM(tokens, state=None) -> (logits, state)``: embedding, ``layers`` LSTM layers with dropout between them
(and before the decoder), a linear decoder to the vocabulary; ``tokens`` (batch, time) int64, ``logits``
(batch, time, vocabulary), ``state`` the LSTM's (h, c), which the caller carries from one segment of text to
the next (truncated backpropagation through time: :mod:`localentropy.experiments.training.text`).

``RowLSTM(images) -> logits``: an image (batch, 1, H, W) is read one row of W pixels per time step for H steps;
the classifier reads the last step's hidden state.
"""

from __future__ import annotations

from torch import Tensor, nn

State = tuple[Tensor, Tensor]


class CharLSTM(nn.Module):
    """Embedding - LSTM x layers - dropout - linear decoder; forward returns (logits, the final LSTM state)."""

    def __init__(self, vocabulary: int, embedding: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, embedding)
        self.lstm = nn.LSTM(
            embedding, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True
        )
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocabulary)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, state = self.lstm(self.embed(tokens), state)
        return self.decoder(self.drop(out)), state


class RowLSTM(nn.Module):
    """An LSTM over the rows of an image (one row per time step), classifying from the last hidden state."""

    def __init__(self, rows: int, width: int, num_classes: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.rows, self.width = rows, width
        self.lstm = nn.LSTM(width, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        out, _ = self.lstm(images.reshape(images.shape[0], self.rows, self.width))
        return self.classifier(self.drop(out[:, -1]))
