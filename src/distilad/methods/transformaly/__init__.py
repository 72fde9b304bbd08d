"""Transformaly (Cohen & Avidan, CVPRW 2022): pretrained and teacher-student feature spaces."""
